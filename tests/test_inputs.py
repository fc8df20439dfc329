"""Bad input gets the project's own clear errors, and the hub keeps serving afterwards."""

from __future__ import annotations

import pytest

import hub
from hub.errors import InputError, UnknownTaskError


def test_unknown_task_lists_known_and_suggests_closest(tiny_hub):
    with pytest.raises(UnknownTaskError) as info:
        tiny_hub.run("sentimen", "good")
    message = str(info.value)
    assert "Did you mean 'sentiment'?" in message
    assert "paraphrase" in message and "similarity" in message
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
