"""A linear-chain CRF with hard tag-scheme constraints: negative log-likelihood, Viterbi, marginals.

Own code rather than `pytorch-crf` (unmaintained since 2019): we need the scheme's forbidden
transitions applied as hard masks in training and decoding (so `I-ORG` can never follow `B-PER`),
per-word marginal probabilities for entity scores, and masks that are never stored (the head's config derives them).
Only the allowed transitions are parameters: a forbidden one never gets a gradient (its path has probability 0),
so storing it would spend bytes on zeros (BMES x 44 POS tags: 8,097 allowed of 31,329).
"""

from __future__ import annotations

import torch
from torch import nn

from ..resident import KeepsParametersAsStored

_FORBIDDEN = -1e4  # added to a forbidden score: exp() of it underflows to 0 without inf - inf = nan


class CRF(KeepsParametersAsStored):
    kept_as_stored = ("transitions",)  # served heads keep them as stored (heads/resident.py)
    start_penalty: torch.Tensor  # buffers, registered below
    end_penalty: torch.Tensor
    transitions_allowed: torch.Tensor

    def __init__(self, start_allowed: torch.Tensor, transitions_allowed: torch.Tensor, end_allowed: torch.Tensor):
        super().__init__()
        size = transitions_allowed.shape[0]
        self.start = nn.Parameter(torch.zeros(size))
        # the allowed entries of the [from, to] score matrix, row by row (`transition_matrix` spreads them out)
        self.transitions = nn.Parameter(torch.zeros(int(transitions_allowed.sum())))
        self.end = nn.Parameter(torch.zeros(size))
        self.register_buffer("transitions_allowed", transitions_allowed.bool(), persistent=False)
        # derived from the tag scheme and labels: not saved (for 177 POS tags the transition mask alone was 125 KB
        # of a 617 KB head file)
        self.register_buffer("start_penalty", (~start_allowed).float() * _FORBIDDEN, persistent=False)
        self.register_buffer("end_penalty", (~end_allowed).float() * _FORBIDDEN, persistent=False)

    def transition_values(self) -> torch.Tensor:
        """The allowed transitions' scores (float32 even where they are kept as stored)."""
        return self.parameter_value("transitions")

    def transition_matrix(self, forbidden: float = 0.0) -> torch.Tensor:
        """[from, to] scores of the allowed transitions, `forbidden` at the others (`_scores` gives them _FORBIDDEN:
        built per pass, not kept, as a [tags x tags] float32 penalty per resident head would be 125 KB for POS)."""
        values = self.transition_values()
        full = values.new_full(self.transitions_allowed.shape, forbidden)
        return full.masked_scatter(self.transitions_allowed, values)

    def transition_penalty(self) -> torch.Tensor:
        """What files written before the masks stopped being saved hold as `crf.transition_penalty`."""
        return (~self.transitions_allowed).float() * _FORBIDDEN

    def allowed_entries(self, matrix: torch.Tensor) -> torch.Tensor:
        """The stored form of a full [from, to] matrix (a file written before only allowed entries were stored)."""
        return matrix[self.transitions_allowed]

    def _scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        transitions = self.transition_matrix(forbidden=_FORBIDDEN)
        return self.start + self.start_penalty, transitions, self.end + self.end_penalty

    def _alpha(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Forward log-scores per position [n, L]; a masked position carries the previous one forward."""
        start, transitions, _ = self._scores()
        alpha = start + emissions[:, 0]
        alphas = [alpha]
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], step, alpha)
            alphas.append(alpha)
        return alphas

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of `tags` [n, W]; `mask` [n, W] marks real words (left-aligned)."""
        if emissions.shape[1] == 0 or not mask[:, 0].any():  # no row with a word: nothing to score
            return emissions.sum() * 0.0
        keep = mask[:, 0]
        emissions, tags, mask = emissions[keep].float(), tags[keep].clamp(min=0), mask[keep]
        start, transitions, end = self._scores()
        rows = torch.arange(emissions.shape[0], device=emissions.device)
        gold = start[tags[:, 0]] + emissions[rows, 0, tags[:, 0]]
        for t in range(1, emissions.shape[1]):
            step = transitions[tags[:, t - 1], tags[:, t]] + emissions[rows, t, tags[:, t]]
            gold = gold + step * mask[:, t]
        last = tags[rows, mask.sum(1) - 1]
        gold = gold + end[last]
        partition = torch.logsumexp(self._alpha(emissions, mask)[-1] + end, dim=1)
        return (partition - gold).mean()

    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Best tag path per row, as long as the row's real words."""
        if emissions.shape[1] == 0:  # rows without a single word (their text had no sub-word)
            return [[] for _ in range(emissions.shape[0])]
        start, transitions, end = self._scores()
        emissions = emissions.float()
        score = start + emissions[:, 0]
        history = []
        for t in range(1, emissions.shape[1]):
            best, previous = (score.unsqueeze(2) + transitions).max(dim=1)
            history.append(previous)
            score = torch.where(mask[:, t : t + 1], best + emissions[:, t], score)
        lengths = mask.sum(1).tolist()
        last = (score + end).argmax(-1).tolist()
        back = torch.stack(history).tolist() if history else []  # read once: on a GPU each element read would sync
        paths: list[list[int]] = []
        for row, length in enumerate(lengths):
            if length == 0:
                paths.append([])
                continue
            tag = last[row]
            path = [tag]
            for t in range(length - 1, 0, -1):
                tag = back[t - 1][row][tag]
                path.append(tag)
            paths.append(path[::-1])
        return paths

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """P(tag at word t | sentence) [n, W, L] by forward-backward; zero at masked positions."""
        emissions = emissions.float()
        if emissions.shape[1] == 0:  # no word in any row: no marginal to compute
            return torch.zeros_like(emissions)
        _, transitions, end = self._scores()
        alphas = self._alpha(emissions, mask)
        lengths = mask.sum(1)
        beta = torch.where(lengths.unsqueeze(1) > 0, end.expand_as(alphas[0]), torch.zeros_like(alphas[0]))
        betas = [beta]
        for t in range(emissions.shape[1] - 1, 0, -1):
            step = torch.logsumexp(transitions + (emissions[:, t] + beta).unsqueeze(1), dim=2)
            # only positions before a row's last word take a step; at and after it beta stays `end`
            beta = torch.where((t < lengths).unsqueeze(1), step, beta)
            betas.append(beta)
        betas = betas[::-1]
        log_z = torch.logsumexp(alphas[-1] + end, dim=1, keepdim=True)
        probs = torch.stack([(a + b - log_z).exp() for a, b in zip(alphas, betas)], dim=1)
        return probs * mask.unsqueeze(-1)
