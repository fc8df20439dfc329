"""Fill-mask requests: a text with one or more of the tokenizer's mask tokens -> each mask's top candidates.

A text longer than the window keeps the tokens around its masks (a window centred on them); masks spread wider
than the window, a text without the mask token, and another tokenizer's spelling of it are refused up front.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hub.errors import DataError, InputError

from ..codec import TEXT_SCHEMA, Codec, ExampleCodec, Row
from .head import IS_MASK, MAX_TOP_K, TOP_K, FillMaskHead
from .words import mask_runs, whole_words

if TYPE_CHECKING:
    from hub.registry import TaskSpec

# how other tokenizers (and people) spell a mask: RoBERTa / XLM-R / BART, T5's sentinels, lower-cased BERT
OTHER_MASK_SPELLINGS = re.compile(r"<mask>|<extra_id_\d+>|\[mask\]|＜mask＞|\{mask\}", re.IGNORECASE)


@dataclass(frozen=True)
class FillMaskRequest:
    """A checked request: the text, its tokens inside the window (ids and character spans), how many candidates."""

    text: str
    ids: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]
    top_k: int
    truncated: bool


class FillMaskCodec(Codec):
    head: FillMaskHead

    @classmethod
    def input_schema(cls, inputs: list[str]) -> dict[str, Any]:
        top_k = {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K}
        return {"anyOf": [TEXT_SCHEMA, {"type": "object", "additionalProperties": False, "required": ["text"],
                                        "properties": {"text": TEXT_SCHEMA, "top_k": top_k}}]}

    def normalize(self, value: Any) -> FillMaskRequest:
        """A text, or {"text": ..., "top_k": n}; InputError for a text without the mask token (naming another
        tokenizer's spelling when it finds one), or with masks spread wider than the window."""
        text, top_k = self._fields(value)
        mask = self.tokenizer.mask_token
        if mask not in text:
            other = OTHER_MASK_SPELLINGS.search(text)
            found = f"; it has {other.group(0)!r}, another tokenizer's spelling" if other else ""
            raise InputError(f"task {self.task.name!r}: the text has no {mask} token{found}. Put {mask} where each "
                             "word to predict goes.")
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids, spans = encoding["input_ids"], encoding["offset_mapping"]
        masks = [i for i, token in enumerate(ids) if token == self.tokenizer.mask_token_id]
        if not masks:  # the spelling is there but the tokenizer reads it as text (inside a longer word)
            raise InputError(f"task {self.task.name!r}: {mask} in the text is not read as the mask token; put spaces "
                             "around it.")
        budget = self.max_length - sum(map(len, self.specials))
        if masks[-1] - masks[0] + 1 > budget:
            raise InputError(f"task {self.task.name!r}: the text's {len(masks)} {mask} tokens spread over "
                             f"{masks[-1] - masks[0] + 1} tokens, more than the {budget} one window holds; send "
                             "fewer masks, or the masks nearer each other, in a request.")
        start = 0
        if len(ids) > budget:  # centre the window on the masks
            start = min(max(0, masks[0] - (budget - (masks[-1] - masks[0] + 1)) // 2), len(ids) - budget)
        end = start + budget
        return FillMaskRequest(text, tuple(ids[start:end]), tuple(map(tuple, spans[start:end])), top_k,
                               truncated=len(ids) > budget)

    def _fields(self, value: Any) -> tuple[str, int]:
        shape = (f"task {self.task.name!r} takes a text with {self.tokenizer.mask_token} in it, or "
                 f"{{\"text\": ..., \"top_k\": 1 to {MAX_TOP_K}}}")
        default = self.task.head.get("top_k", self.head.config.top_k)  # the entry's, else the head's
        if isinstance(value, str):
            text, top_k = value, default
        elif isinstance(value, dict) and "text" in value and set(value) <= {"text", "top_k"}:
            text, top_k = value["text"], value.get("top_k", default)
        else:
            got = f"keys {sorted(value)}" if isinstance(value, dict) else type(value).__name__
            raise InputError(f"{shape}; got {got}.")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{shape}; got an empty text or a {type(text).__name__}.")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise InputError(f"{shape}; got top_k={top_k!r}.")
        return text, top_k

    def encode(self, requests: Sequence[FillMaskRequest]) -> list[list[Row]]:
        before, after = self.specials
        rows = []
        for request in requests:
            ids = [*before, *request.ids, *after]
            is_mask = [int(token == self.tokenizer.mask_token_id) for token in ids]
            rows.append([Row(ids, [0] * len(ids), {IS_MASK.name: is_mask, TOP_K.name: [request.top_k]},
                             truncated=request.truncated)])
        return rows

    def finish(self, request: FillMaskRequest, rows: list[Row], decoded: list[dict[str, Any]]) -> dict[str, Any]:
        """Each mask's character span and candidates (vocabulary token, id, probability), the text with every
        mask filled by its first candidate, and for Chinese text each run of adjacent masks' whole-word candidates
        (heads/fill_mask/words.py)."""
        spans = [span for token, span in zip(request.ids, request.spans) if token == self.tokenizer.mask_token_id]
        masks: list[dict[str, Any]] = []
        scored: list[list[tuple[str, float]]] = []  # each mask's (token, probability), for whole words
        sequence, last = [], 0
        for (start, end), candidates in zip(spans, decoded[0]["masks"]):
            tokens = self.tokenizer.convert_ids_to_tokens([token for token, _ in candidates])
            masks.append({"start": start, "end": end, "candidates": [
                {"token": token, "token_id": token_id, "score": round(score, 6)}
                for token, (token_id, score) in zip(tokens, candidates)]})
            scored.append([(token, score) for token, (_, score) in zip(tokens, candidates)])
            sequence += [request.text[last:start], tokens[0].removeprefix("##")]
            last = end
        result: dict[str, Any] = {"masks": masks, "sequence": "".join([*sequence, request.text[last:]])}
        if self.language == "zh":
            positions = [i for i, token in enumerate(request.ids) if token == self.tokenizer.mask_token_id]
            runs = [{"start": masks[run[0]]["start"], "end": masks[run[-1]]["end"],
                     "words": whole_words([scored[i] for i in run], request.top_k)} for run in mask_runs(positions)]
            if runs:
                result["words"] = runs
        return {**result, **({"truncated": True} if rows[0].truncated else {})}


def fill_mask_examples(rows: list[Any], task: TaskSpec, source: str) -> list[dict[str, Any]]:
    """Cloze examples for evaluation: a text with one mask and the token that belongs there (`label`)."""
    columns = task.data.columns if task.data else {}
    examples = []
    for index, row in enumerate(rows):
        try:
            text, label = row[columns.get("text", "text")], row[columns.get("label", "label")]
        except (KeyError, IndexError, TypeError):
            raise DataError(f"{source}, row {index + 1}: a fill-mask example needs a text with a mask and its answer "
                            "('text' and 'label'; map other names with data.columns).") from None
        examples.append({"text": text, "label": str(label)})
    return examples


class FillMaskExamples(ExampleCodec):
    """Evaluation on cloze examples (the first mask's first candidate against `label`). Training is `hub pretrain`'s:
    it masks raw text itself, so there are no labelled rows to train from."""

    def features(self, example: dict[str, Any]) -> list[dict[str, Any]]:
        raise DataError(f"task {self.task.name!r} is a fill-mask task: train its adapter with `hub pretrain "
                        f"{self.task.name} --text FILE` (masked-language modelling on raw text), not `hub train`.")

    def request(self, example: dict[str, Any]) -> str:
        return str(example["text"])

    def prediction(self, result: dict[str, Any]) -> str:
        return str(result["masks"][0]["candidates"][0]["token"])

    def reference(self, example: dict[str, Any]) -> str:
        return str(example["label"])
