"""Bad input gets the project's own clear errors, and the hub keeps serving afterwards."""

from __future__ import annotations

import pytest

import hub
from hub.errors import InputError, UnknownTaskError


def test_unknown_task_suggests_closest_and_says_where_the_list_is(tiny_hub):
    with pytest.raises(UnknownTaskError) as info:
        tiny_hub.run("sentimen", "good")
    message = str(info.value)
    assert "Did you mean 'sentiment'?" in message
    assert "paraphrase" not in message and "9 task(s)" in message and "hub list" in message  # never the whole registry
    assert isinstance(info.value, hub.HubError)


@pytest.mark.parametrize(
    ("task", "value", "message"),
    [
        ("sentiment", "", "empty or whitespace"),
        ("sentiment", "   \n\t", "empty or whitespace"),
        ("sentiment", None, "got None"),
        ("sentiment", 42, "got int"),
        ("sentiment", b"bytes", "got bytes"),
        ("sentiment", ("good", "bad"), "takes one text"),
        ("paraphrase", "only one text", "takes a pair \\(first, second\\)"),
        ("paraphrase", ("a", None), "got a None inside"),
        ("paraphrase", ("a", "b", "c"), "got 3 text"),
        ("paraphrase", {"first": "a"}, "got keys \\['first'\\]"),
        ("similarity", ("a", " "), "empty or whitespace"),
    ],
)
def test_bad_inputs(tiny_hub, task, value, message):
    with pytest.raises(InputError, match=message):
        tiny_hub.run(task, value)
    assert tiny_hub.run("sentiment", "good movie")["task"] == "sentiment"  # still serving


def test_dict_input_by_field_names(tiny_hub):
    by_dict = tiny_hub.run("paraphrase", {"first": "the book", "second": "a movie"})
    by_tuple = tiny_hub.run("paraphrase", ("the book", "a movie"))
    assert by_dict == by_tuple


def test_bad_item_in_a_batch_names_its_position(tiny_hub):
    with pytest.raises(InputError, match="request #2"):
        tiny_hub.run("sentiment", ["good", "bad", ""])
    with pytest.raises(InputError, match="request #1 must be a \\(task, input\\) tuple"):
        tiny_hub.run_many([("sentiment", "good"), "sentiment"])


@pytest.mark.parametrize(
    ("task", "value", "message"),
    [
        ("sentiment", "\u200b\u0001", "task 'sentiment': the text has no tokens the model can read"),
        ("paraphrase", ("good", "\ufeff"), "the 'second' text has no tokens the model can read"),
        ("reader", {"question": "what is good?", "context": "\u00ad"}, "the context has no tokens the model can read"),
        ("sentiment", "\ud800", "task 'sentiment': input has a lone surrogate \\(U\\+D800\\) at character 0"),
        ("entities", ("good", "a\udfff"), "input\\[1\\] has a lone surrogate \\(U\\+DFFF\\) at character 1"),
    ],
)
def test_text_a_tokenizer_cannot_read_is_refused_with_the_reason(tiny_hub, task, value, message):
    with pytest.raises(InputError, match=message):
        tiny_hub.run(task, value)
    assert tiny_hub.run("entities", "\u200b")["tags"] == ["O"]  # tagging answers per word: nothing found, no error
