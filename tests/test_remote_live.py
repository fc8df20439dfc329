"""Push and pull against the real Hugging Face Hub: runs only with HF_TOKEN set and the Hub reachable
(`make test` runs offline, so there it is skipped). The repo is private, uniquely named, and deleted after."""

from __future__ import annotations

import os
import uuid
from types import SimpleNamespace

import pytest

from test_remote import TEXTS, hub_cli, ok, user_registry

pytestmark = pytest.mark.skipif(
    not os.environ.get("HF_TOKEN") or os.environ.get("HF_HUB_OFFLINE") == "1",
    reason="live Hub test: set HF_TOKEN (a write token) and leave HF_HUB_OFFLINE unset to run it",
)


def test_round_trip_through_the_real_hub(tmp_path, trained_registry, tiny_hub, tiny_backbone_dir):
    from huggingface_hub import HfApi

    import hub

    token = os.environ["HF_TOKEN"]
    api = HfApi(token=token)
    repo = f"{api.whoami()['name']}/bert-adapter-hub-live-{uuid.uuid4().hex[:8]}"
    real = SimpleNamespace(endpoint=os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    mine = user_registry(tmp_path / "user", tiny_backbone_dir)
    try:
        pushed, pulled = (ok(r) for r in hub_cli(
            real, tmp_path / "home",
            ["push", "entities", "--repo", repo, "--private", "-r", str(trained_registry)],
            ["pull", repo, "--as", "ner", "-r", str(mine)],
            token=token,
        ))
        assert pulled["hub"] == f"{repo}@{pushed['commit']}"
        strip = lambda result: {k: v for k, v in result.items() if k != "task"}  # noqa: E731
        assert [strip(r) for r in hub.Hub.load(mine).run("ner", TEXTS)] == [strip(r) for r in tiny_hub.run("entities", TEXTS)]
        assert api.model_info(repo).private
    finally:
        api.delete_repo(repo, missing_ok=True)
