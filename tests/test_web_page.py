"""The web page `hub serve` serves at / (hub/web), in a real browser: Playwright driving headless Chromium (Debian's
`chromium`; `make browser` installs it) against a server on 127.0.0.1 with the tiny trained registry. The catalog
lists the registry's tasks; the try-it forms of a classification, a tagging, a QA, a relation and a joint task answer
and draw the result (highlighted spans whose text is the entity's); an unknown task and an empty input show a clear
message; the API key works; and no request leaves the machine."""

from __future__ import annotations

import shutil
from urllib.parse import urlparse

import pytest

import hub
from hub.server import ServerLimits, create_app, running_server

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install -e "
                                                                   "'.[test]'")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium installed: `make browser` (Debian: apt-get install chromium) to run the browser tests",
                allow_module_level=True)


@pytest.fixture(scope="module")
def served(trained_registry) -> hub.Hub:
    return hub.Hub.load(trained_registry)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(served):
    with running_server(create_app(served)) as url:
        yield url


@pytest.fixture
def page(browser, server):
    """A fresh page whose every request outside 127.0.0.1 is refused and recorded (the test fails on any)."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    outside: list[str] = []

    def only_here(route):
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_here)
    opened = context.new_page()
    opened.set_default_timeout(60_000)
    yield opened
    context.close()
    assert outside == [], f"the page asked for {outside}"


def _open(page, server: str, task: str) -> None:
    """The task's page, drawn (a hash change re-renders asynchronously: wait for this task's heading and form)."""
    page.goto(f"{server}/#/task/{task}")
    page.wait_for_function("task => document.querySelector('h1')?.textContent === task", arg=task)


def _try(page, server: str, task: str, **fields: str) -> None:
    _open(page, server, task)
    page.wait_for_selector("#try-form")
    for name, value in fields.items():
        page.fill(f"#try-form [name={name}]", value)
    page.click("#run")
    page.wait_for_selector("#result .drawn, #result .error")


def test_the_catalog_lists_every_task_grouped_by_backbone(page, server, served):
    page.goto(server + "/")
    page.wait_for_selector("#catalog tr[data-task]")
    names = page.eval_on_selector_all("#catalog tr[data-task]", "rows => rows.map(r => r.dataset.task)")
    assert sorted(names) == sorted(t.name for t in served.registry.tasks)
    assert page.locator("section.backbone").count() == len({t.backbone for t in served.registry.tasks})
    page.select_option("#kind-filter", "tagging")
    shown = page.eval_on_selector_all("#catalog tr[data-task]", "rows => rows.map(r => r.dataset.task)")
    assert shown == [t.name for t in served.registry.tasks if t.kind == "tagging"]
    page.fill("#search", "no such task anywhere")
    assert "No task matches" in page.inner_text("#catalog")


def test_classification_answers_with_a_score_bar(page, server, served):
    _try(page, server, "sentiment", text="good movie")
    expected = served.run("sentiment", "good movie")
    assert page.inner_text("#result .label-value") == expected["label"]
    assert page.locator("#result .score .fill").count() == 1


def test_tagging_highlights_each_entity_in_the_text(page, server, served):
    text = "the good movie had a bad plot"
    _try(page, server, "entities", text=text)
    expected = served.run("entities", text)["entities"]
    drawn = page.eval_on_selector_all("#result mark.ent", "marks => marks.map(m => [m.querySelector('.ent-text')"
                                                          ".textContent, m.dataset.label])")
    assert drawn == [[e["text"], e["label"]] for e in expected]
    assert page.inner_text("#result .text-view").replace("\n", "").startswith("the ")


def test_pairs_and_regression_take_two_texts(page, server, served):
    _try(page, server, "paraphrase", first="good movie", second="a good film")
    assert page.inner_text("#result .label-value") == served.run("paraphrase", ("good movie", "a good film"))["label"]
    _try(page, server, "similarity", first="good movie", second="bad plot")
    value = served.run("similarity", ("good movie", "bad plot"))["value"]
    assert float(page.inner_text("#result .regression-value")) == pytest.approx(value, abs=1e-3)


def test_pre_split_tokens_are_tagged_as_tokens(page, server, served):
    tokens = ["good", "movie", "bad", "plot"]
    _open(page, server, "entities")
    page.fill("#try-form [name=text]", "\n".join(tokens))
    page.check("#as-tokens")
    page.click("#run")
    page.wait_for_selector("#result .drawn")
    expected = served.run("entities", tuple(tokens))["entities"]
    drawn = page.eval_on_selector_all("#result mark.ent .ent-text", "spans => spans.map(s => s.textContent)")
    assert drawn == [e["text"] for e in expected]


def test_qa_highlights_the_answer_in_the_context(page, server, served):
    context = "the movie was good and the plot was bad"
    _try(page, server, "reader", question="what was good?", context=context)
    expected = served.run("reader", {"question": "what was good?", "context": context})
    if expected["answer"] is None:
        assert "No answer" in page.inner_text("#result")
    else:
        assert page.inner_text("#result mark.answer") == expected["answer"]


def test_relation_and_joint_tasks_draw_their_relations(page, server, served):
    _try(page, server, "relations", text="<e1>good</e1> beats <e2>bad</e2>")
    assert page.inner_text("#result .label-value") == served.run("relations", "<e1>good</e1> beats <e2>bad</e2>")["label"]
    text = "the good movie was sad"
    _try(page, server, "joint", text=text)
    expected = served.run("joint", text)
    marks = page.eval_on_selector_all("#result mark.ent .ent-text", "spans => spans.map(s => s.textContent)")
    assert marks == [e["text"] for e in expected["entities"]]
    relations = page.locator("#result .relation").count()
    assert relations == len(expected["relations"]) or (not expected["relations"] and "No relation" in page.inner_text("#result"))


def test_fill_mask_shows_each_masks_candidates(page, server, served):
    text = "the a movie [MASK] was"
    _try(page, server, "fill", text=text)
    expected = served.run("fill", text)
    assert page.inner_text("#result strong") == expected["sequence"]
    bars = page.eval_on_selector_all("#result .score > span:first-child", "spans => spans.map(s => s.textContent)")
    assert bars == [c["token"] for c in expected["masks"][0]["candidates"]]


def test_an_unknown_task_and_an_empty_input_say_what_is_wrong(page, server):
    _open(page, server, "sentimnet")
    assert "unknown task 'sentimnet'" in page.inner_text(".error") and "Did you mean 'sentiment'" in page.inner_text(".error")
    _try(page, server, "sentiment", text="   ")
    assert "input is empty" in page.inner_text("#result .error")
    _try(page, server, "sentiment", text="\u200b")
    assert "no tokens the model can read" in page.inner_text("#result .error")


def test_the_mixed_batch_answers_every_example_in_one_request(page, server, served):
    page.goto(f"{server}/#/mixed")
    page.click("#run-mixed")
    page.wait_for_selector("#mixed-result .batch-summary")
    with_examples = [t for t in served.registry.tasks if t.example is not None
                     and served.registry.adapter_dir(t).is_dir()]
    assert page.locator("#mixed-result .batch-row").count() == len(with_examples)
    assert "batch round" in page.inner_text("#mixed-result .batch-summary")


def test_a_server_with_an_api_key_asks_for_it(browser, served):
    with running_server(create_app(served, ServerLimits(api_key="s3cret"))) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector(".error")
        assert "API key" in page.inner_text(".error")
        page.fill("#api-key", "s3cret")
        page.dispatch_event("#api-key", "change")
        page.wait_for_selector("#catalog tr[data-task]")
        context.close()


def test_the_page_is_usable_on_a_phone(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(server + "/")
    page.wait_for_selector("#catalog tr[data-task]")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # no sideways scrolling
    page.keyboard.press("Tab")  # keyboard reachable: the first link takes focus
    assert page.evaluate("document.activeElement.tagName") in ("A", "INPUT")
    context.close()
