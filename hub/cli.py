"""The `hub` command line (also `python -m hub`)."""

from __future__ import annotations

import gc
import json
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from heads.storage import HEAD_STORAGE, HeadStorage

from . import default_registry_path
from .errors import AdapterError, HubError, RemoteError
from .service import Hub

app = typer.Typer(help="Many NLP tasks from one frozen BERT per language.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
out = Console()
err = Console(stderr=True)
RegistryOption = Annotated[Path | None, typer.Option("--registry", "-r", help="registry YAML (default: the shipped "
                                                     "registry.yaml or $HUB_REGISTRY)")]
DeviceOption = Annotated[str | None, typer.Option("--device", help="where the models run: cpu (default), cuda, "
                                                  "cuda:N, mps or auto")]
DtypeOption = Annotated[str | None, typer.Option("--dtype", help="backbone + adapter precision: float32 (default), "
                                                    "bfloat16 (GPUs; CPUs with AVX512-BF16 or AMX), float16 (GPUs) or "
                                                    "int8 (CPU: the backbone's linear layers in int8, hub/int8.py)")]
CompileOption = Annotated[bool, typer.Option("--compile", help="run the backbone through torch.compile (the int8 CPU "
                                             "runtime's fastest form; loading takes the compile, tens of seconds; "
                                             "needs a C++ compiler)")]


def _fail(exc: HubError) -> None:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)
    raise typer.Exit(code=2)


def _hub(registry: Path | None, device: str | None = None, dtype: str | None = None,
         adapter: tuple[str, Path] | None = None, compile: bool = False) -> Hub:
    """The Hub over `registry`; `adapter` (task, folder) serves that task from another trained folder."""
    if adapter is None:
        return Hub.load(registry or default_registry_path(), device=device, dtype=dtype, compile=compile)
    from .registry import load_registry, with_adapter

    loaded = load_registry(registry or default_registry_path(), strict_adapters=False)
    return Hub(with_adapter(loaded, *adapter), device=device, dtype=dtype, compile=compile)


AdapterFolderOption = Annotated[Path | None, typer.Option(
    "--adapter", help="serve the task from this trained folder (e.g. one `hub train --output` wrote) instead of the "
                      "registry's")]


@app.command("list")
def list_tasks(registry: RegistryOption = None) -> None:
    """List the tasks the registry serves."""
    try:
        tasks = _hub(registry).tasks()
    except HubError as exc:
        _fail(exc)
    table = Table("task", "kind", "lang", "inputs", "labels", "metric", "trained", "adapter")
    for column in table.columns[:3]:
        column.no_wrap = True
    for t in tasks:
        labels = f"{len(t['labels'])}: " + ", ".join(t["labels"]) if t["labels"] else "-"
        trained = "unavailable" if "unavailable" in t else "yes" if t["trained"] else "no"
        adapter = f"{t['method']}, {t['bytes']:,} B" if "method" in t else "-"
        if t.get("runtime", "float32") != "float32":  # trained and validated for another backbone runtime
            adapter += f", for --dtype {t['runtime']}"
        table.add_row(t["task"], t["kind"], t["language"], " + ".join(t["inputs"]), labels, t["metric"], trained,
                      adapter)
    out.print(table)
    for t in tasks:  # in full below the table: a wrapped cell would cut the reason into pieces
        if "unavailable" in t:
            out.print(f"[bold yellow]unavailable:[/] {t['task']}: {escape(t['unavailable'])}", highlight=False,
                      soft_wrap=True)


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="task name, e.g. sst2")],
    texts: Annotated[list[str] | None, typer.Argument(help="one text; two for a pair task or QA (question, context); "
                                                      "several = pre-split tokens for tagging")] = None,
    json_input: Annotated[str | None, typer.Option(
        "--json", help="the input as JSON, in any form hub.run takes, e.g. a relation's "
                       '\'{"text": "...", "head": [0, 4], "tail": [9, 14]}\' (instead of TEXTS)')] = None,
    registry: RegistryOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    compile: CompileOption = False,
    adapter: AdapterFolderOption = None,
) -> None:
    """Answer one input and print the result as JSON."""
    try:
        request = _request(texts, json_input)
        hub = _hub(registry, device, dtype, (task, adapter) if adapter else None, compile)
        result = hub.run(task, request)
    except HubError as exc:
        _fail(exc)
    print(json.dumps(result, ensure_ascii=False))


@app.command()
def embed(
    texts: Annotated[list[str], typer.Argument(help="one or more texts")],
    target: Annotated[str | None, typer.Option(
        "--with", help="a backbone (e.g. en, zh) or a task to embed through its adapter (default: the only "
                       "backbone)")] = None,
    layers: Annotated[str, typer.Option(help="last, last4 (their mean), mix (a task head's learned mix) or a layer "
                                             "number")] = "last",
    pooling: Annotated[str, typer.Option(help="tokens (a vector per token, with offsets), mean or cls")] = "mean",
    unit: Annotated[bool, typer.Option(help="scale pooled vectors to length 1")] = False,
    registry: RegistryOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Print contextual embeddings as JSON lines, one per text."""
    try:
        results = _hub(registry, device, dtype).embed(texts, target, layers, pooling, unit)
    except HubError as exc:
        _fail(exc)
    for result in results:
        print(json.dumps(result, ensure_ascii=False))


def _request(texts: list[str] | None, json_input: str | None) -> Any:
    """`hub run`'s input: its texts (one; a pair or QA as a tuple; tokens) or --json's value."""
    if (texts is None) == (json_input is None):
        raise HubError("give the input as TEXTS or as --json (one of the two), e.g. `hub run sst2 \"Loved it\"` or "
                       "`hub run semeval2010 --json '{\"text\": \"...\", \"head\": [0, 4], \"tail\": [9, 14]}'`.")
    if json_input is None:
        assert texts is not None
        return texts[0] if len(texts) == 1 else tuple(texts)
    try:
        return json.loads(json_input)
    except json.JSONDecodeError as exc:
        raise HubError(f"--json {json_input!r} is not JSON ({exc.msg} at character {exc.pos}); quote the whole value "
                       "for the shell: --json '{\"text\": \"...\", \"head\": [0, 4], \"tail\": [9, 14]}'.") from None


@app.command()
def train(
    task: Annotated[str, typer.Argument(help="task name in the registry")],
    registry: RegistryOption = None,
    output: Annotated[Path | None, typer.Option(help="adapter folder to write (default: the task's 'adapter')")] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    max_train_examples: Annotated[int | None, typer.Option()] = None,
    max_eval_examples: Annotated[int | None, typer.Option()] = None,
    max_train_seconds: Annotated[float | None, typer.Option(
        help="a time budget: stop training after this many seconds, then evaluate and write the folder as usual")]
    = None,
    seed: Annotated[int | None, typer.Option()] = None,
    adapter: Annotated[str | None, typer.Option(
        help="the adapter method and options instead of the recipe's, as a YAML mapping: '{method: ia3}', "
             "'{method: lora, r: 4}', '{method: bottleneck, config: seq_bn, reduction_factor: 64}'")] = None,
    runtime: Annotated[str | None, typer.Option(
        help="the backbone to train against and validate on: float32 (default) or int8 (for `--dtype int8` serving)")]
    = None,
    init_from: Annotated[Path | None, typer.Option(
        help="start the adapter from this domain adapter (`hub pretrain` wrote it) instead of from scratch")] = None,
    processes: Annotated[int, typer.Option(
        min=1, help="data-parallel processes on this machine (gloo on CPUs, NCCL on GPUs; hub/distributed.py)")] = 1,
) -> None:
    """Fine-tune the task's adapter (LoRA, (IA)3, VeRA, bottleneck: the recipe's) + head (backbone frozen), evaluate on
    dev, write the folder."""
    import sys

    from .distributed import launch, without_option
    from .registry import load_registry
    from .training import train_task

    try:
        if processes > 1:
            raise typer.Exit(launch(without_option(sys.argv[1:], "--processes"), processes))
        train_task(
            load_registry(registry or default_registry_path(), strict_adapters=False), task, output=output,
            epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, max_train_examples=max_train_examples,
            max_eval_examples=max_eval_examples, max_train_seconds=max_train_seconds, seed=seed,
            adapter=_mapping("--adapter", adapter), runtime=runtime,
            init_from=str(init_from.resolve()) if init_from else None,
        )
    except HubError as exc:
        _fail(exc)


@app.command()
def pretrain(
    context: typer.Context,
    name: Annotated[Path, typer.Argument(help="the adapter folder to write")],
    text: Annotated[list[Path] | None, typer.Option(
        help="a corpus: plain text, one text per line, or JSON lines (.jsonl) with a text field; repeatable")] = None,
    task: Annotated[list[str] | None, typer.Option(
        help="a task whose training texts (without labels) are the corpus: task-adaptive pre-training; repeatable "
             "(the tasks' texts taken in turn, so --max-texts keeps a share of each)")] = None,
    backbone: Annotated[str | None, typer.Option(
        help="the registry's backbone to pre-train on (e.g. en, zh; default: the task's)")] = None,
    objective: Annotated[str, typer.Option(help="mlm (BERT's), whole_word, or span (SpanBERT's)")] = "mlm",
    span_boundary: Annotated[bool, typer.Option(help="add SpanBERT's span boundary objective (with span)")] = False,
    next_sentence: Annotated[bool, typer.Option(
        help="add BERT's next-sentence prediction: --text files hold one sentence per line, documents separated by "
             "a blank line")] = False,
    text_field: Annotated[str, typer.Option(help="the text's field in JSON lines")] = "text",
    max_texts: Annotated[int | None, typer.Option(
        help="pre-train on at most this many texts (the first ones, in the files' order, then the task's)")] = None,
    registry: RegistryOption = None,
    adapter: Annotated[str | None, typer.Option(help="the adapter method and options as a YAML mapping (default "
                                                     "'{method: lora}')")] = None,
    epochs: Annotated[float, typer.Option()] = 1.0,
    batch_size: Annotated[int, typer.Option()] = 16,
    learning_rate: Annotated[float, typer.Option(help="the adapter's")] = 5e-4,
    head_learning_rate: Annotated[float, typer.Option(help="the objective heads' (trained from scratch)")] = 5e-3,
    max_length: Annotated[int, typer.Option()] = 128,
    seed: Annotated[int, typer.Option()] = 42,
    transform_rank: Annotated[int | None, typer.Option(
        min=1, help="the fill-mask head's dense layer as two of this rank: a head small beside its backbone "
                    "(default: BERT's full hidden x hidden layer)")] = None,
) -> None:
    """Pre-train a domain adapter and its objective heads on raw text (backbone frozen); the card records held-out
    masked-token accuracy before and after."""
    from .pretraining.corpus import read_documents_file, read_texts, tasks_texts
    from .pretraining.masking import Objective
    from .pretraining.train import PretrainRecipe
    from .pretraining.train import pretrain as run_pretraining
    from .registry import load_registry

    try:
        recipe = PretrainRecipe(objective=cast(Objective, objective), span_boundary=span_boundary,  # it checks
                                next_sentence=next_sentence,
                                adapter=_mapping("--adapter", adapter), epochs=epochs, batch_size=batch_size,
                                learning_rate=learning_rate, head_learning_rate=head_learning_rate,
                                max_length=max_length, seed=seed, transform_rank=transform_rank)
        loaded = load_registry(registry or default_registry_path(), strict_adapters=False)
        if not text and not task:
            raise HubError("give the corpus: --text FILE (repeatable) and/or --task NAME (its training texts).")
        if next_sentence and (task or not text):
            raise HubError("--next-sentence reads documents: give --text files (one sentence per line, documents "
                           "separated by a blank line); a task's texts have no documents.")
        documents = [d for path in text or [] for d in read_documents_file(path)] if next_sentence else None
        texts = [] if next_sentence else [line for path in text or [] for line in read_texts(path, text_field)]
        texts += tasks_texts(loaded, task) if task else []
        if max_texts is not None:
            if max_texts < 2:
                raise HubError(f"--max-texts {max_texts}: pre-training needs at least 2 texts (some are held out).")
            texts = texts[:max_texts]
        on = backbone or (loaded.task(task[0]).backbone if task else None)
        if on is None:
            raise HubError("name the backbone to pre-train on: --backbone (e.g. en, zh), or --task to use the task's.")
        card = run_pretraining(loaded, on, texts, name, recipe, documents=documents, command=_command_line(context))
    except HubError as exc:
        _fail(exc)
    held = card["held_out"]
    shown = [f"{label} {held[key]['before']:.3f} -> {held[key]['after']:.3f}" for key, label in
             (("accuracy", "masked-token accuracy"), ("perplexity", "perplexity"),
              ("next_sentence_accuracy", "next-sentence accuracy")) if key in held]
    typer.echo(f"wrote {name}: {card['steps']} steps over {card['corpus']['train_texts']} texts; held out: "
               + ", ".join(shown))


def _command_line(context: typer.Context) -> str:
    """The command as given, rebuilt from its parsed parameters (defaults left out), for a card's reproduce line."""
    words = ["hub", context.command.name or ""]
    for parameter in context.command.params:
        value = context.params.get(parameter.name or "")
        if value is None or value == parameter.default or not parameter.opts:
            continue
        if parameter.param_type_name == "argument":
            words.append(str(value))
        elif getattr(parameter, "is_flag", False) and isinstance(value, bool):  # --flag / --no-flag
            words.append(parameter.opts[0] if value else parameter.secondary_opts[0])
        else:
            words += [item for one in (value if isinstance(value, (list, tuple)) else [value])
                      for item in (parameter.opts[0], str(one))]
    return shlex.join(words)


def _mapping(option: str, text: str | None) -> dict[str, Any] | None:
    """A command-line option given as a YAML mapping ('{method: lora, r: 4}'); HubError when it is not one."""
    if text is None:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise HubError(f"{option} {text!r} is not YAML ({str(exc).splitlines()[0]}); give a mapping such as "
                       "'{method: lora, r: 4}'.") from None
    if not isinstance(value, dict):
        raise HubError(f"{option} {text!r} is not a mapping; give one such as '{{method: lora, r: 4}}'.")
    glued = [key for key, item in value.items() if item is None and ":" in str(key)]
    if glued:  # '{method:ia3}' reads as the key 'method:ia3': YAML needs a space after a colon
        raise HubError(f"{option} {text!r}: {glued[0]!r} reads as one key; write a space after each colon, e.g. "
                       "'{method: lora, r: 4}'.")
    return value


@app.command("eval")
def evaluate(
    task: Annotated[str, typer.Argument(help="task name in the registry")],
    registry: RegistryOption = None,
    max_eval_examples: Annotated[int | None, typer.Option(
        help="a sample of N dev rows, drawn with the recipe's seed (the same rows `hub train` scores)")] = None,
    adapter: AdapterFolderOption = None,
) -> None:
    """Measure a trained task on its dev split (the card's metric) and print it as JSON."""
    from .data import load_split, sample_rows
    from .evaluation import evaluate_task

    try:
        hub = _hub(registry, adapter=(task, adapter) if adapter else None)
        spec = hub.registry.task(task)
        dev = sample_rows(load_split(hub.registry, spec, "dev"), max_eval_examples, spec.train.seed)
        print(json.dumps({"task": task, "examples": len(dev), **evaluate_task(hub, task, dev)}))
    except HubError as exc:
        _fail(exc)


@app.command()
def bench(
    suite: Annotated[str, typer.Argument(help="glue or clue (their NER and QA tasks included)")],
    tasks: Annotated[list[str] | None, typer.Option("--task", "-t", help="a task to run (repeat; default: the suite's "
                                                     "registered tasks)")] = None,
    methods: Annotated[list[str] | None, typer.Option("--method", "-m", help="lora, full, probe or registered (repeat; "
                                                       "default: lora, full, probe)")] = None,
    seeds: Annotated[list[int] | None, typer.Option("--seed", help="training seed (repeat for mean ± std; "
                                                     "default 42)")] = None,
    max_train_examples: Annotated[int | None, typer.Option(help="training examples per task (0: all)")] = 2000,
    max_eval_examples: Annotated[int | None, typer.Option(help="a fixed dev sample per task "
                                                          "(default: all of dev)")] = None,
    epochs: Annotated[float | None, typer.Option(help="epochs per task (default: each task's recipe)")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="LoRA learning rate "
                                                        "(default: each task's recipe)")] = None,
    full_learning_rate: Annotated[float, typer.Option(help="full fine-tuning learning rate")] = 5e-5,
    full_head_learning_rate: Annotated[float | None, typer.Option(help="full fine-tuning's head "
                                                                  "(default: --full-learning-rate)")] = None,
    probe_learning_rate: Annotated[float, typer.Option(help="linear probe (head only) learning rate")] = 5e-3,
    rank: Annotated[int | None, typer.Option(help="LoRA rank, alpha = 2 x rank (default: each task's recipe)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="read the data files from here "
                                                  "instead of ../shared/data")] = None,
    out: Annotated[Path, typer.Option(help="results folder")] = Path("benchmarks/results"),
    name: Annotated[str | None, typer.Option(help="results file name (default: the suite), "
                                             "e.g. for another budget")] = None,
    registry: RegistryOption = None,
    workers: Annotated[int, typer.Option(min=1, help="cells at once, each in its own process on this machine")] = 1,
    ray: Annotated[bool, typer.Option("--ray", help="run the cells as Ray tasks on the cluster at $RAY_ADDRESS "
                                      "(default: a local one); every node reads the same paths")] = False,
    cpus_per_cell: Annotated[float, typer.Option(min=0.01, help="with --ray: CPUs one cell reserves")] = 1.0,
) -> None:
    """LoRA vs full fine-tuning vs linear probe on one budget: dev tables (markdown, JSON) and a plot; resumable."""
    import shlex
    import sys

    from .bench import SUITES, BenchConfig, run_bench, with_data_root
    from .registry import load_registry

    try:
        if suite not in SUITES:
            raise HubError(f"bench: unknown suite {suite!r}; use {' or '.join(SUITES)} (or name tasks with --task).")
        loaded = load_registry(registry or default_registry_path(), strict_adapters=False)
        if data_dir is not None:
            loaded = with_data_root(loaded, data_dir)
        names = [t.name for t in loaded.tasks]
        chosen = tasks or [t for t in SUITES[suite] if t in names]
        config = BenchConfig(suite=suite, tasks=chosen, methods=methods or ["lora", "full", "probe"],
                             seeds=seeds or [42], max_train_examples=max_train_examples or None,
                             max_eval_examples=max_eval_examples, epochs=epochs, learning_rate=learning_rate,
                             full_learning_rate=full_learning_rate, full_head_learning_rate=full_head_learning_rate,
                             probe_learning_rate=probe_learning_rate, rank=rank, out=out, name=name)
        backend: Literal["serial", "processes", "ray"] = "ray" if ray else "processes" if workers > 1 else "serial"
        print(run_bench(config, loaded, command=shlex.join(["hub", *sys.argv[1:]]), backend=backend, workers=workers,
                        cpus_per_cell=cpus_per_cell))
    except HubError as exc:
        _fail(exc)


@app.command()
def push(
    task: Annotated[str, typer.Argument(help="task whose adapter folder to upload")],
    repo: Annotated[str, typer.Option("--repo", help="Hub repo id, owner/name (created if absent)")],
    private: Annotated[bool, typer.Option("--private", help="create the repo private")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="branch to commit to "
                                                 "(created from main if absent)")] = None,
    registry: RegistryOption = None,
) -> None:
    """Upload a task's adapter (PEFT files, head, card) to the Hugging Face Hub ($HF_TOKEN or `hf auth login`)."""
    from .registry import load_registry
    from .remote import push as push_adapter

    try:
        loaded = load_registry(registry or default_registry_path(), strict_adapters=False)
        if task in loaded.adapter_problems:  # never upload a folder that cannot be served
            raise HubError(loaded.adapter_problems[task])
        commit = push_adapter(loaded, task, repo, private=private, revision=revision)
    except HubError as exc:
        _fail(exc)
    print(json.dumps({"task": task, "repo": repo, "revision": revision or "main", "commit": commit}))


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="owner/name or owner/name@revision (branch, tag or commit)")],
    as_task: Annotated[str | None, typer.Option("--as", help="task name in the registry "
                                                "(default: the repo name)")] = None,
    registry: RegistryOption = None,
) -> None:
    """Download a Hub adapter (pinned to its commit, hashes checked) and add its task to the registry."""
    from .remote import pull as pull_adapter

    try:
        task = pull_adapter(registry or default_registry_path(), ref, as_task=as_task)
    except HubError as exc:
        _fail(exc)
    print(json.dumps({"task": task.name, "kind": task.kind, "hub": task.hub, "adapter": task.adapter}))


@app.command("import-peft")
def import_peft(
    source: Annotated[str, typer.Argument(help="a PEFT adapter folder, or a Hub repo owner/name[@revision]")],
    as_task: Annotated[str, typer.Option("--as", help="task name to add to the registry")],
    labels: Annotated[str, typer.Option("--labels", help="comma-separated label names, "
                                        "in the classifier's output order")],
    inputs: Annotated[str | None, typer.Option("--inputs", help="input field names, comma-separated "
                                               "(two for pairs; default: text)")] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="dev metric (default: accuracy / entity_f1)")] = None,
    registry: RegistryOption = None,
) -> None:
    """Add a plain PEFT LoRA adapter for a BERT sequence or token classifier (classifier in modules_to_save)
    as a task."""
    from .interop import import_peft as import_adapter

    split = lambda text: [part.strip() for part in text.split(",") if part.strip()]  # noqa: E731
    try:
        task = import_adapter(registry or default_registry_path(), source, as_task, split(labels),
                              inputs=split(inputs) if inputs else None, metric=metric)
    except HubError as exc:
        _fail(exc)
    print(json.dumps({"task": task.name, "kind": task.kind, "labels": task.labels, "adapter": task.adapter}))


@app.command()
def quantize(
    task: Annotated[str, typer.Argument(help="task whose adapter folder to store again, in place")],
    dtype: Annotated[str | None, typer.Option("--dtype", help="the adapter's weights: int8 or int4 (LoRA: a float32 "
                                              "scale per rank channel), float16, bfloat16, or float32 (the file plain "
                                              "PEFT reads: dequantizes int8 / int4). Default: the registry's "
                                              "train.storage, with its head and rank")] = None,
    head: Annotated[str | None, typer.Option("--head", help="the head's weights: float32, float16 or int8 "
                                             "(default: as they are)")] = None,
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval", help="measure the stored folder on dev for its card "
                                           "(default) or keep the card's metrics")] = True,
    rank: Annotated[int | None, typer.Option("--rank", min=1, help="LoRA: store each layer's update at this lower "
                                             "rank (its best approximation, by SVD)")] = None,
    registry: RegistryOption = None,
) -> None:
    """Store a task's adapter weights as int8, int4, float16 or bfloat16 (or back as float32), optionally at a lower
    LoRA rank, and its head as float16 or int8 (without --dtype: as its recipe's train.storage says); the rewritten
    folder is loaded as serving loads it and measured on dev before it replaces the old one (atomically)."""
    from .quantize import quantize_task
    from .registry import load_registry

    if head not in (None, *HEAD_STORAGE):
        _fail(HubError(f"--head {head!r}: a head is stored as {', '.join(HEAD_STORAGE)}."))
    head_storage = cast("HeadStorage | None", head)  # checked just above
    try:
        loaded = load_registry(registry or default_registry_path(), strict_adapters=False)
        if dtype is None:
            storage = loaded.task(task).train.storage
            dtype, head_storage, rank = storage.adapter, head_storage or storage.head, rank or storage.rank
        report = quantize_task(loaded, task, dtype, head_storage, evaluate, progress=False, rank=rank)
    except HubError as exc:
        _fail(exc)
    print(json.dumps(report))


@app.command()
def fetch(
    tasks: Annotated[list[str], typer.Argument(help="tasks whose `hub:` adapter to download into their folder")],
    registry: RegistryOption = None,
) -> None:
    """Download the Hub adapters of registry entries (`hub: owner/name@revision`) now, e.g. before `hub serve`."""
    try:
        hub = _hub(registry)
        for task in tasks:
            hub.runtime(task)
            print(json.dumps({"task": task, "adapter": str(hub.registry.adapter_dir(hub.registry.task(task)))}))
    except HubError as exc:
        _fail(exc)


@app.command()
def serve(
    registry: RegistryOption = None,
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    preload: Annotated[list[str] | None, typer.Option(help="task to load at startup "
                                                       "(repeat; 'all' for every trained task)")] = None,
    max_batch_size: Annotated[int, typer.Option(min=1, help="rows per backbone pass")] = 64,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="how long a lone request waits for company")] = 5.0,
    max_queue: Annotated[int, typer.Option(min=1, help="items waiting at most; more get 503 overloaded")] = 1024,
    max_items: Annotated[int, typer.Option(min=1, help="items per request at most (413 above)")] = 256,
    max_body_kb: Annotated[int, typer.Option(min=1, help="request body size limit (413 above)")] = 1024,
    max_windows_per_item: Annotated[int, typer.Option(min=1, help="backbone windows one item may need "
                                                      "(413 above)")] = 64,
    max_windows_per_request: Annotated[int, typer.Option(min=1, help="backbone windows one request may need "
                                                         "(413 above)")] = 1024,
    request_timeout_s: Annotated[float, typer.Option(min=0.001, help="a request unanswered by then gets 504")] = 60.0,
    ready_stall_s: Annotated[float, typer.Option(min=0.001, help="/health/ready says not ready once one batch round "
                                                 "has run this long")] = 30.0,
    cache_tasks: Annotated[int | None, typer.Option(min=1, help="loaded tasks kept at most (LRU); "
                                                    "default: no limit")] = None,
    cache_mb: Annotated[float | None, typer.Option(min=0.001, help="MB of adapters + heads kept at most (LRU)")] = None,
    idle_release_s: Annotated[float, typer.Option(min=0, help="seconds without requests before freed memory "
                                                  "goes back to the OS")] = 1.0,
    access_log: Annotated[bool, typer.Option(help="log every request (uvicorn's access log)")] = True,
    api_key: Annotated[str | None, typer.Option(envvar="HUB_API_KEY", help="require `Authorization: Bearer KEY` "
                                                   "(all but /health/live, /health/ready and the docs); "
                                                   "or $HUB_API_KEY")] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(help="Host header to answer (repeat; '*.example.com' "
                                                              "allowed); default: any")] = None,
    cors_origin: Annotated[list[str] | None, typer.Option(help="browser origin allowed to call (repeat; CORS)")] = None,
    fetch: Annotated[bool, typer.Option("--fetch", help="download `hub:` adapters missing locally on first request "
                                        "(default: they are unavailable; `hub fetch TASK` downloads them)")] = False,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    compile: CompileOption = False,
) -> None:
    """Serve every task over HTTP (FastAPI + uvicorn): POST /v1/run, GET /v1/tasks, /health, /metrics, /docs."""
    import uvicorn

    from .server import ServerLimits, create_app

    try:
        hub = Hub.load(registry or default_registry_path(), max_batch_size=max_batch_size, max_tasks=cache_tasks,
                       max_bytes=int(cache_mb * 1e6) if cache_mb else None, device=device, dtype=dtype,
                       allow_fetch=fetch, compile=compile)
        _preload(hub, preload or [])
        # The preloaded tasks live as long as the server: take them out of the garbage collector's full
        # scans (dozens of objects per task, mostly its head's modules).
        gc.collect()
        gc.freeze()
        limits = ServerLimits(max_body_bytes=max_body_kb * 1024, max_items=max_items, max_batch_size=max_batch_size,
                              max_wait_ms=max_wait_ms, max_queue=max_queue, idle_release_s=idle_release_s,
                              max_rows_per_item=max_windows_per_item, max_rows_per_request=max_windows_per_request,
                              request_timeout_s=request_timeout_s, ready_stall_s=ready_stall_s, api_key=api_key or None,
                              allowed_hosts=tuple(allowed_host or ()), cors_origins=tuple(cors_origin or ()))
        app_ = create_app(hub, limits)
    except HubError as exc:
        _fail(exc)
    if not api_key and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[bold yellow]warning:[/] serving on {host} without an API key: anyone who can reach this port can "
                  "run every task. Set --api-key (or $HUB_API_KEY), and --allowed-host for the names clients use.",
                  highlight=False)
    uvicorn.run(app_, host=host, port=port, log_level="info", access_log=access_log)


@app.command("ray-serve")
def ray_serve(
    registry: RegistryOption = None,
    config: Annotated[Path | None, typer.Option(help="a YAML of the application's options (hub.ray_serve."
                                                "RayServeOptions: replicas, autoscaling, limits, ...); the options "
                                                "below override it")] = None,
    replicas: Annotated[int | None, typer.Option(min=1, help="HubReplica replicas (default 2)")] = None,
    tasks_per_replica: Annotated[int | None, typer.Option(min=1, help="tasks one replica keeps loaded")] = None,
    address: Annotated[str | None, typer.Option(envvar="RAY_ADDRESS", help="the Ray cluster to join (default: start "
                                                "a local one); or $RAY_ADDRESS")] = None,
    host: Annotated[str, typer.Option(help="address Serve's HTTP proxy listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port of Serve's HTTP proxy")] = 8000,
) -> None:
    """Serve every task on Ray Serve: `hub serve`'s HTTP API over N replicas, requests routed to a replica that
    holds their task (hub/ray_serve.py; deploy/ray_serve.yaml; README "More than one machine")."""
    try:
        import ray
        from ray import serve
    except ImportError:
        _fail(HubError("Ray Serve is not installed: pip install 'bert-adapter-hub[ray]' (or 'ray[serve]')."))
    from .ray_serve import APP_NAME, build_app

    options: Any = yaml.safe_load(config.read_text(encoding="utf-8")) if config else {}
    if isinstance(options, dict) and "applications" in options:  # a Serve config file: its first app's args
        options = (options["applications"] or [{}])[0].get("args") or {}
    if not isinstance(options, dict):
        _fail(HubError(f"{config}: give a mapping of Ray Serve options (registry, replicas, limits, ...) or a "
                       "Serve config file (deploy/ray_serve.yaml)."))
    overrides = {"registry": str(registry) if registry else None, "replicas": replicas,
                 "tasks_per_replica": tasks_per_replica}
    options.update({key: value for key, value in overrides.items() if value is not None})
    options.setdefault("registry", str(default_registry_path()))
    try:
        application = build_app(options)
    except HubError as exc:
        _fail(exc)
    ray.init(address=address or "local")
    serve.start(http_options={"host": host, "port": port})
    serve.run(application, name=APP_NAME, route_prefix="/", blocking=True)


def _preload(hub: Hub, names: list[str]) -> None:
    """Load tasks before the server starts. An unknown name fails here, cleanly; a task that cannot load is
    reported and stays unavailable (its requests get 503), and the others serve."""
    tasks = [t["task"] for t in hub.tasks() if t["trained"]] if names == ["all"] else names
    for task in tasks:
        try:
            hub.runtime(task)
        except (AdapterError, RemoteError) as exc:
            err.print(f"[bold yellow]warning:[/] {escape(str(exc))}", highlight=False, markup=True)


@app.command()
def demo(registry: RegistryOption = None, device: DeviceOption = None, dtype: DtypeOption = None,
         compile: CompileOption = False) -> None:
    """Answer every trained task's registry `example`, all in one mixed batch."""
    try:
        hub = _hub(registry, device, dtype, compile=compile)
        served = [t for t in hub.registry.tasks if t.example is not None and hub.registry.adapter_dir(t).is_dir()]
        results = hub.run_many([(t.name, t.example_input) for t in served])
    except HubError as exc:
        _fail(exc)
    table = Table("task", "lang", "input", "result", title="one mixed batch: one backbone pass per language")
    for task, result in zip(served, results):
        shown = {k: v for k, v in result.items() if k != "task"}
        language = hub.registry.backbone(task.backbone).language
        assert task.example is not None  # `served` holds only tasks with an example
        example = task.example if isinstance(task.example, str) else " | ".join(
            (v if isinstance(v, str) else json.dumps(v) for v in task.example.values())
            if isinstance(task.example, dict) else task.example)  # a relation's spans as [start, end]
        table.add_row(task.name, language, example, json.dumps(shown, ensure_ascii=False))
    out.print(table)


def main() -> None:
    app()
