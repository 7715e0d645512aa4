"""The ``concept-tracker`` command: ``demo``, ``analyze`` and ``report``.

    concept-tracker demo [--label-noise 0.3] [--steps 1500] [--output-dir runs/demo] [--seed 0]
    concept-tracker analyze CHECKPOINT... --data probes.pt --players patches:2x5 \\
        [--model-factory mymodule:build] [--log-dir runs/analyze] [--force]
    concept-tracker report LOG_DIR... [--html report.html] [--force]

Exit status: 0 on success, 2 on a usage or input error (one line on stderr naming the
argument or path, no traceback), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor, nn

from . import report
from .rundir import RunLock, run_entries
from .values import VALUE_NAMES

EXIT_USAGE = 2

DATA_FORMATS = """\
--data formats (labels are optional; without them the targets are the model's predictions at
the first checkpoint; held-out probes add the generalization/* scalars and need aligned players):
  .pt / .pth      torch.save of a Tensor [B, ...] (the inputs), or of a dict
                  {"inputs": Tensor or dict of Tensors, "labels": [B],
                   "heldout_inputs": ..., "heldout_labels": ...}
  .safetensors    tensors named inputs, labels, heldout_inputs, heldout_labels; dict inputs
  .npz            (e.g. tokenized text) as inputs.input_ids, inputs.attention_mask, ...
causal language models (supervised fine-tuning): "labels" [B, T] (or inputs.labels) with the
answer's token ids at its positions and -100 elsewhere, the shape of inputs.input_ids; the value
then defaults to answer_log_prob, log p(answer | prompt).
"""

PLAYER_FORMATS = """\
--players formats:
  tabular[:COLUMNS]              feature columns of [B, d] inputs, e.g. tabular:0-9 or tabular:0,3,5
  patches:ROWSxCOLS[:PATCHES]    image patches, e.g. patches:2x5 or patches:4x4:1,2,5,6,9,10
  tokens:N                       the first N words of Hugging Face inputs (input_ids, ...);
                                 --baseline zero or mean: the embedding of masked words when
                                 the tokenizer has no mask token (default mean)
  mask:FILE                      a Captum-style feature mask (ids 0..n-1, -1 background) in a
                                 .pt / .safetensors / .npz file (tensor "feature_mask")
"""

CHECKPOINT_FORMATS = """\
checkpoints (the step is the number at the end of the name: checkpoint-500 -> 500,
step_00000500.pt -> 500, epoch=3-step=500.ckpt -> 500):
  a Hugging Face save_pretrained folder (config.json + safetensors weights), loaded offline
  a state dict file (.pt, .pth, .bin, .ckpt, .safetensors) loaded into --model-factory's model;
      a dict with a "state_dict" or "model" entry is unwrapped
  a folder holding such checkpoints (e.g. a Trainer output_dir with checkpoint-* folders)
"""


class InputError(Exception):
    """A bad argument or input file; the message names it and says what to do."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ----------------------------------------------------------------------------------- demo


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    config = DemoConfig(
        steps=args.steps,
        label_noise=args.label_noise,
        seed=args.seed,
        output_dir=args.output_dir,
        kind=args.kind,
        progress=not args.no_progress,
    )
    run_demo(config, force=args.force)
    return 0


# ------------------------------------------------------------------------------ analyze


def _load_tensors(path: Path) -> dict[str, Any] | Tensor:
    """A data or mask file as a Tensor or a dict of tensors (or nested dicts, for .pt)."""
    if not path.is_file():
        raise InputError(f"{path} does not exist.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".pt", ".pth"):
            return torch.load(path, map_location="cpu", weights_only=True)
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as archive:
                return {key: torch.from_numpy(archive[key]) for key in archive.files}
    except Exception as err:  # every loader has its own error types for damaged files
        raise InputError(
            f"{path} could not be read ({type(err).__name__}: {_one_line(err)}); is it truncated?"
        ) from err
    raise InputError(f"{path} has suffix {suffix!r}; use .pt, .pth, .safetensors or .npz.")


def _gather(data: dict[str, Any], prefix: str) -> Tensor | dict[str, Tensor] | None:
    """``data[prefix]`` itself, or the dict of entries named ``prefix.KEY``."""
    if prefix in data:
        return data[prefix]
    parts = {key[len(prefix) + 1 :]: value for key, value in data.items() if key.startswith(prefix + ".")}
    return parts or None


def load_probe_data(path: str | Path) -> dict[str, Any]:
    """Read ``--data``: see :data:`DATA_FORMATS`.

    Returns:
        dict with "inputs", "labels", "heldout_inputs", "heldout_labels" (absent ones None).
    """
    path = Path(path)
    raw = _load_tensors(path)
    if isinstance(raw, Tensor):
        raw = {"inputs": raw}
    if not isinstance(raw, dict):
        raise InputError(f"{path} holds a {type(raw).__name__}; save a Tensor or a dict (see --help for the formats).")
    data: dict[str, Any] = {
        name: _gather(raw, name) for name in ("inputs", "labels", "heldout_inputs", "heldout_labels")
    }
    if data["inputs"] is None:
        raise InputError(
            f"{path} has no 'inputs' (found {sorted(raw)}); name the probe inputs 'inputs' or "
            "'inputs.<key>' (see --help for the formats)."
        )
    for name, value in data.items():
        tensors = value.values() if isinstance(value, dict) else [value]
        if value is not None and not all(isinstance(t, Tensor) for t in tensors):
            raise InputError(f"{path}: '{name}' must be a tensor or a dict of tensors.")
    for split in ("", "heldout_"):
        inputs, labels = data[f"{split}inputs"], data[f"{split}labels"]
        if isinstance(inputs, dict) and _is_answer(labels, inputs):
            # Answer labels of a causal LM travel with the inputs, as in a fine-tuning batch.
            data[f"{split}inputs"], data[f"{split}labels"] = {**inputs, "labels": labels}, None
    return data


def _is_answer(labels: Any, inputs: dict[str, Any]) -> bool:
    """Whether ``labels`` are answer labels [B, T] of causal LM ``inputs`` (the shape of input_ids)."""
    ids = inputs.get("input_ids")
    return isinstance(labels, Tensor) and isinstance(ids, Tensor) and labels.dim() == 2 and labels.shape == ids.shape


def _index_list(text: str, what: str) -> list[int]:
    """``"0,3,5"`` or ``"0-9"`` (or a mix, ``"0-3,7"``) as a list of ints."""
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                first, last = (int(p) for p in part.split("-"))
                out.extend(range(first, last + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise InputError(f"--players: {what} {text!r} must be integers like 0,3,5 or a range like 0-9.") from None
    return out


def parse_players(spec: str, baseline: str | None = None, mask_token_id: int | None = None) -> Any:
    """Build players from a ``--players`` spec (see :data:`PLAYER_FORMATS`).

    Args:
        spec: e.g. ``"patches:2x5"``.
        baseline: ``--baseline`` ("zero", "mean" or a number), or None for the kind's default.
        mask_token_id: ``--mask-token-id`` (tokens players only).
    """
    from .players import FeatureMaskPlayers, ImagePatchPlayers, TabularPlayers, TokenPlayers

    kind, _, rest = spec.partition(":")
    base: Any = baseline
    if baseline is not None and baseline not in ("zero", "mean"):
        try:
            base = float(baseline)
        except ValueError:
            raise InputError(f"--baseline={baseline!r}; use zero, mean or a number.") from None
    options = {} if base is None else {"baselines": base}
    if mask_token_id is not None and kind != "tokens":
        raise InputError(f"--mask-token-id applies to tokens players, not {kind!r}.")
    if kind == "tabular":
        features = _index_list(rest, "columns") if rest else None
        return TabularPlayers(features=features, **options)
    if kind == "patches":
        grid_text, _, select_text = rest.partition(":")
        match = re.fullmatch(r"(\d+)x(\d+)", grid_text)
        if match is None:
            raise InputError(f"--players={spec!r}: give the grid as ROWSxCOLS, e.g. patches:2x5.")
        select = _index_list(select_text, "patches") if select_text else None
        return ImagePatchPlayers(grid=(int(match[1]), int(match[2])), select=select, **options)
    if kind == "tokens":
        if baseline is not None and baseline not in ("zero", "mean"):
            raise InputError(
                f"--baseline={baseline!r} for tokens players; use zero or mean (the input embedding of "
                "masked words when the tokenizer has no mask token)."
            )
        if not rest.isdigit():
            raise InputError(f"--players={spec!r}: give the number of words, e.g. tokens:10.")
        return TokenPlayers(n=int(rest), mask_token_id=mask_token_id)
    if kind == "mask":
        loaded = _load_tensors(Path(rest))
        mask = loaded.get("feature_mask") if isinstance(loaded, dict) else loaded
        if not isinstance(mask, Tensor):
            raise InputError(f"{rest} holds no tensor 'feature_mask'; save the mask as a tensor or under that name.")
        return FeatureMaskPlayers(mask, **options)
    raise InputError(
        f"--players={spec!r}: unknown kind {kind!r}; use tabular, patches, tokens or mask (see analyze --help)."
    )


_STATE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def checkpoint_step(path: Path) -> int:
    """The training step in a checkpoint's name: the number its name (without suffix) ends with."""
    stem = path.name if path.is_dir() else path.stem
    match = re.search(r"(\d+)$", stem)
    if match is None:
        raise InputError(
            f"{path}: no step in the name; name checkpoints like checkpoint-500 (folders) or step_00000500.pt (files)."
        )
    return int(match[1])


def _is_pretrained(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _is_checkpoint(path: Path) -> bool:
    if path.is_dir():
        return (path / "config.json").is_file() or any((path / name).is_file() for name in _WEIGHT_FILES)
    return path.suffix.lower() in _STATE_SUFFIXES


def find_checkpoints(paths: Sequence[str]) -> list[tuple[int, Path]]:
    """Checkpoints named on the command line, folders of checkpoints expanded, sorted by step.

    Raises:
        InputError: for a missing path, a folder without checkpoints, a name without a step, or
            two checkpoints with one step.
    """
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise InputError(f"{path} does not exist.")
        if _is_checkpoint(path):
            found.append(path)
            continue
        inside = (
            sorted(p for p in path.iterdir() if re.search(r"\d$", p.stem) and _is_checkpoint(p))
            if path.is_dir()
            else []
        )
        if not inside:
            raise InputError(
                f"{path} is neither a checkpoint nor a folder of checkpoints (see analyze --help for the formats)."
            )
        found.extend(inside)
    by_step: dict[int, Path] = {}
    for path in found:
        step = checkpoint_step(path)
        if step in by_step:
            raise InputError(f"{by_step[step]} and {path} both have step {step}; analyze one run at a time.")
        by_step[step] = path
    return sorted(by_step.items())


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """``module:function`` (the current directory is importable) as a callable."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"--model-factory={spec!r}; write it as module:function, e.g. mymodels:build_model.")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(f"--model-factory={spec!r}: cannot import {module_name!r} ({_one_line(err)}).") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"--model-factory={spec!r}: {module_name} has no function {attr!r}.")
    return factory


def _weights_file(path: Path) -> Path | None:
    """The file holding a checkpoint's weights (None for a folder without a known one)."""
    if not path.is_dir():
        return path
    return next((path / name for name in _WEIGHT_FILES if (path / name).is_file()), None)


def check_readable(path: Path) -> None:
    """Fail fast on a damaged checkpoint, before any is analyzed: a safetensors header must fit
    the file, and a torch.save file must be a complete zip archive. Reads no tensor data."""
    weights = _weights_file(path)
    if weights is None:
        return  # sharded Hugging Face weights: transformers checks them while loading
    try:
        if weights.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(weights), framework="pt"):
                pass
        else:
            with open(weights, "rb") as fh:
                zipped = fh.read(2) == b"PK"
            # torch.save writes a zip archive (older torch: a bare pickle, not checked here).
            if zipped and not zipfile.is_zipfile(weights):
                raise ValueError("the zip archive written by torch.save is incomplete")
    except Exception as err:
        raise InputError(
            f"{weights} could not be read ({type(err).__name__}: {_one_line(err)}); is it truncated?"
        ) from err


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    path = _weights_file(path) or path
    state: Any
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(
            f"{path} could not be read ({type(err).__name__}: {_one_line(err)}); is it truncated?"
        ) from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise InputError(f"{path} holds a {type(state).__name__}, not a state dict (save model.state_dict()).")
    return state


def load_model(path: Path, factory: Callable[[], nn.Module] | None, device: torch.device) -> nn.Module:
    """The model of one checkpoint: the factory's model with the weights loaded, or a Hugging
    Face folder through the class named in its config.json (offline)."""
    if factory is None:
        return _load_pretrained(path).to(device)
    model = factory()
    if not isinstance(model, nn.Module):
        raise InputError(f"--model-factory returned a {type(model).__name__}; it must return an nn.Module.")
    try:
        model.load_state_dict(_read_state_dict(path))
    except RuntimeError as err:
        raise InputError(
            f"{path} does not fit the --model-factory model ({_one_line(err)[:300]}); does the factory "
            "build the architecture this checkpoint was saved from?"
        ) from err
    return model.to(device)


def _load_pretrained(path: Path) -> nn.Module:
    try:
        import transformers
    except ImportError as err:
        raise InputError("Hugging Face checkpoints need transformers: pip install 'concept-tracker[hf]'.") from err
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        names = getattr(config, "architectures", None) or []
        cls = getattr(transformers, names[0], None) if names else None
        # Without a named architecture, a classification head is what the value functions read.
        cls = cls or transformers.AutoModelForSequenceClassification
        return cls.from_pretrained(path, local_files_only=True)
    except Exception as err:  # transformers raises OSError, ValueError or safetensors errors
        raise InputError(
            f"{path} could not be loaded as a Hugging Face checkpoint ({type(err).__name__}: {_one_line(err)[:300]})."
        ) from err


def _tokenizer_for(path: Path) -> Any:
    """The tokenizer saved with a Hugging Face checkpoint, or None."""
    # Without its files, AutoTokenizer may build a tokenizer with an empty vocabulary.
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception:  # no tokenizer files: TokenPlayers then needs --mask-token-id
        return None


def _old_runs(log_dir: Path) -> list[Path]:
    """The folders of earlier analyses in ``log_dir``: itself and its ``baseline-*`` folders,
    those that hold a run (see ``rundir.run_entries``)."""
    folders = [log_dir, *sorted(log_dir.glob(f"{report.BASELINE_DIR_PREFIX}*"))]
    return [folder for folder in folders if run_entries(folder)]


class _Analysis:
    """The owner of the run locks an analysis holds (a lock is released when its owner goes)."""


@contextmanager
def staged_runs(log_dir: Path, targets: Sequence[Path], force: bool) -> Iterator[Callable[[Path], Path]]:
    """Where an analysis writes: a fresh staging folder beside ``log_dir``, moved into place
    only once every run in it is complete, so that nothing is deleted before it is checked.

    Before anything is written, an earlier run in ``log_dir`` is refused without ``force``, and
    ``log_dir``, its earlier runs and the ``targets`` are locked (``rundir.RunLock``): a live
    tracker there refuses the analysis and keeps its folder as it is. After the ``with`` body,
    the earlier runs' entries (event files and stored interactions, nothing else) are moved
    aside, the new ones moved in, then the old ones deleted. When the body fails, the staging
    folder is deleted and ``log_dir`` stays as it was.

    Args:
        log_dir: ``--log-dir``.
        targets: the run folders the analysis writes, ``log_dir`` or folders inside it.
        force: ``--force``, replace an earlier run.
    Yields:
        ``fresh(target)``: the staging folder to write the run of ``target`` into.
    Raises:
        InputError: for a file at ``log_dir``, an earlier run without ``force``, or a folder in
            use by a live tracker.
    """
    if log_dir.exists() and not log_dir.is_dir():
        raise InputError(f"--log-dir {log_dir} is a file; pass a directory.")
    old = _old_runs(log_dir) if log_dir.is_dir() else []
    if old and not force:
        raise InputError(
            f"{log_dir} already holds a tracked run; pass --force to replace it or choose another --log-dir."
        )
    folders = list(dict.fromkeys([log_dir, *old, *targets]))
    created = [folder for folder in folders if not folder.exists()]
    owner, locks = _Analysis(), []
    log_dir.parent.mkdir(parents=True, exist_ok=True)
    stage: Path | None = None
    swapping = False
    try:
        for folder in folders:
            lock = RunLock(folder)
            lock.acquire(owner)
            locks.append(lock)
        stage = Path(tempfile.mkdtemp(prefix=f".{log_dir.name}.analyze-", dir=log_dir.parent))
        new, aside = stage / "new", stage / "old"
        yield lambda target: new / target.relative_to(log_dir)
        swapping = True
        for folder in old:
            _move_entries(folder, aside / folder.relative_to(log_dir))
        for target in targets:
            _move_entries(new / target.relative_to(log_dir), target)
        swapping = False
        shutil.rmtree(stage)
    except ValueError as err:  # a lock held by a live tracker
        raise InputError(str(err)) from err
    except BaseException:
        if swapping:  # rare: a rename failed midway; keep both runs where the user can find them
            raise InputError(
                f"replacing the run in {log_dir} failed midway; the earlier run is in {stage}/old and the "
                f"new one in {stage}/new."
            ) from None
        raise
    finally:
        if stage is not None and not swapping and stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        for lock in locks:
            lock.release()
        for folder in reversed(created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()  # made only to hold the lock of an analysis that failed


def _move_entries(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in run_entries(source):
        os.replace(entry, target / entry.name)


def _run_analyze(args: argparse.Namespace) -> int:

    from .probes import ProbeSet, select_probes

    checkpoints = find_checkpoints(args.checkpoints)
    factory = load_factory(args.model_factory) if args.model_factory else None
    for _, path in checkpoints:
        if factory is None and not _is_pretrained(path):
            raise InputError(
                f"{path} is not a Hugging Face checkpoint folder (no config.json); pass "
                "--model-factory module:function to load state dicts."
            )
        check_readable(path)
    data = load_probe_data(args.data)
    baselines = _baseline_list(args)
    parse_players(args.players, baselines[0], args.mask_token_id)  # a bad spec fails before any work
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    probes = ProbeSet(data["inputs"], data["labels"], None)
    if args.probes is not None:
        probes = select_probes(probes.inputs, args.probes, labels=probes.labels, seed=args.seed)

    log_dir = Path(args.log_dir)
    # One run per baseline, side by side with --baselines: do the conclusions depend on the baseline?
    names = None if args.baselines is None else [str(b) for b in baselines]
    targets = [log_dir] if names is None else [log_dir / f"{report.BASELINE_DIR_PREFIX}{b}" for b in names]
    with staged_runs(log_dir, targets, args.force) as fresh:
        for _, path in checkpoints:  # every checkpoint loads before any is analyzed
            load_model(path, factory, torch.device("cpu"))
        for baseline, target in zip(baselines, targets):
            _analyze_one(args, checkpoints, factory, data, probes, device, baseline, fresh(target))
    if names is None:
        print(report.summary_table([report.summarize_run(log_dir, readings={"ratio": args.ratio})]))
        print(f"\nWrote {log_dir}: tensorboard --logdir {log_dir}")
        return 0
    runs = [
        report.summarize_run(t, name=f"baseline {b}", readings={"ratio": args.ratio}) for b, t in zip(names, targets)
    ]
    print(report.summary_table(runs))
    print("\nAcross baselines:")
    for line in report.baseline_agreement({b: [r] for b, r in zip(names, runs)}):
        print(f"  {line}")
    print(f"\nWrote {log_dir}/{report.BASELINE_DIR_PREFIX}*: tensorboard --logdir {log_dir}")
    return 0


def _default_value(inputs: Any) -> str:
    """``--value`` when not given: ``answer_log_prob`` for inputs with answer labels, else ``log_odds``."""
    return "answer_log_prob" if isinstance(inputs, dict) and _is_answer(inputs.get("labels"), inputs) else "log_odds"


def _baseline_list(args: argparse.Namespace) -> list[str | None]:
    """The baselines to analyze under: ``--baselines`` split at commas, else ``[--baseline]``."""
    if args.baselines is None:
        return [args.baseline]
    if args.baseline is not None:
        raise InputError("--baseline and --baselines exclude each other; pass one of them.")
    names = [b.strip() for b in args.baselines.split(",") if b.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise InputError(f"--baselines={args.baselines!r}; pass two or more different baselines, e.g. zero,mean.")
    return list(names)


def _analyze_one(
    args: argparse.Namespace,
    checkpoints: list[tuple[int, Path]],
    factory: Callable[[], nn.Module] | None,
    data: dict[str, Any],
    probes: Any,
    device: torch.device,
    baseline: str | None,
    log_dir: Path,
) -> None:
    """Track every checkpoint under one baseline into ``log_dir``."""
    from tqdm.auto import tqdm

    from .config import BudgetConfig, ReadingsConfig
    from .players import TokenPlayers, fit_mean_baseline
    from .probes import ProbeSet
    from .schedules import at_steps
    from .tracker import ConceptTracker

    players = parse_players(args.players, baseline, args.mask_token_id)
    if isinstance(players, TokenPlayers):
        # Word grouping, special tokens and the default mask token come from the tokenizer.
        players.tokenizer = _tokenizer_for(checkpoints[0][1])
    else:
        # A "mean" baseline is the mean of every input in --data, not only the --probes drawn.
        fit_mean_baseline(players, data["inputs"])
    heldout = None if data["heldout_inputs"] is None else ProbeSet(data["heldout_inputs"], data["heldout_labels"])
    tracker = ConceptTracker(
        players,
        probes,
        heldout,
        log_dir=log_dir,
        schedule=at_steps([step for step, _ in checkpoints]),
        kind=args.kind,
        value=args.value or _default_value(probes.inputs),
        readings=ReadingsConfig(ratio=args.ratio),
        budget=BudgetConfig(batch_size=args.batch_size),
        strict=True,
    )
    with tracker:
        for step, path in tqdm(checkpoints, desc="checkpoints", unit="ckpt"):
            tracker.step(load_model(path, factory, device), step)


# ------------------------------------------------------------------------------- report


def _run_report(args: argparse.Namespace) -> int:
    html = Path(args.html) if args.html else None
    if html is not None and html.exists() and not args.force:
        raise InputError(f"{html} exists; pass --force to overwrite it.")
    dirs = [Path(d) for d in args.log_dirs]
    # Directory names label the runs; fall back to full paths when two names collide.
    names = [d.name for d in dirs]
    if len(set(names)) < len(names):
        names = [str(d) for d in dirs]
    options = {"ratio": args.ratio, "simple_max": args.simple_max, "complex_min": args.complex_min}
    grouped = [report.baseline_runs(d) for d in dirs]
    if all(grouped):
        return _report_baselines(grouped, names, options, html)
    runs = [report.summarize_run(d, name=name, readings=options) for d, name in zip(dirs, names)]
    print(report.summary_table(runs))
    print("\nTrain-test similarity by order (last tracked step):")
    print(report.similarity_table(runs))
    sampled = report.sampled_table(runs)
    if sampled:
        print(f"\n{sampled}")
    if html is not None:
        report.write_html(runs, html)
        print(f"\nWrote {html}")
    return 0


def _report_baselines(
    grouped: list[dict[str, Path]], names: list[str], options: dict[str, Any], html: Path | None
) -> int:
    """Report runs written by ``analyze --baselines``: a table per baseline, then whether the
    band ordering and the ordering of the runs agree across the baselines they share."""
    shared = [b for b in grouped[0] if all(b in g for g in grouped)]
    if not shared:
        raise InputError(
            f"the runs share no baseline ({[sorted(g) for g in grouped]}); analyze them with the same --baselines."
        )
    by_baseline = {
        b: [report.summarize_run(g[b], name=name, readings=options) for g, name in zip(grouped, names)] for b in shared
    }
    for baseline, runs in by_baseline.items():
        print(f"Baseline {baseline}:")
        print(report.summary_table(runs))
        print()
    print("Across baselines:")
    for line in report.baseline_agreement(by_baseline):
        print(f"  {line}")
    if html is not None:
        flat = [replace(r, name=f"{r.name} ({b})") for b, runs in by_baseline.items() for r in runs]
        report.write_html(flat, html)
        print(f"\nWrote {html}")
    return 0


# --------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The ``concept-tracker`` argument parser."""
    parser = _Parser(
        prog="concept-tracker",
        description="Track the interactive concepts (Harsanyi AND/OR interactions) a model learns.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser(
        "demo",
        help="train a small MLP on digits with clean and noisy labels and compare their concepts",
        description="Train the same MLP on scikit-learn's digits twice (clean labels, and with a "
        "fraction randomized), track AND-OR interactions of 10 image patches, and compare.",
    )
    demo.add_argument(
        "--label-noise",
        type=float,
        default=0.3,
        help="fraction of training labels randomized in the noisy run (default 0.3)",
    )
    demo.add_argument("--steps", type=int, default=1500, help="training steps per run (default 1500)")
    demo.add_argument(
        "--output-dir", default="runs/demo", help="where runs, figures and report.html go (default runs/demo)"
    )
    demo.add_argument(
        "--seed", type=int, default=0, help="seed of data split, label noise, init and batches (default 0)"
    )
    demo.add_argument(
        "--kind", choices=("and", "or", "and_or"), default="and_or", help="interaction kind (default and_or)"
    )
    demo.add_argument("--force", action="store_true", help="replace non-run content at <output-dir>/clean and /noisy")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    demo.set_defaults(func=_run_demo)

    analyze = sub.add_parser(
        "analyze",
        help="track saved checkpoints after the fact (same TensorBoard output as live tracking)",
        description="Compute interactions of saved checkpoints on a probe set and write the same "
        "TensorBoard output and stored interactions as live tracking.",
        epilog=CHECKPOINT_FORMATS + "\n" + DATA_FORMATS + "\n" + PLAYER_FORMATS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    analyze.add_argument(
        "checkpoints", nargs="+", metavar="CHECKPOINT_DIR", help="checkpoints or folders of checkpoints"
    )
    analyze.add_argument("--data", required=True, help="probe set file (.pt, .safetensors or .npz; see below)")
    analyze.add_argument("--players", required=True, help="player spec, e.g. patches:2x5, tabular:0-9, tokens:10")
    analyze.add_argument("--model-factory", help="module:function returning the nn.Module that state dicts load into")
    analyze.add_argument("--log-dir", default="runs/analyze", help="output directory (default runs/analyze)")
    analyze.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier run in --log-dir (once the new one is complete; a live run is never touched)",
    )
    analyze.add_argument(
        "--kind", choices=("and", "or", "and_or"), default="and", help="interaction kind (default and)"
    )
    analyze.add_argument(
        "--value",
        choices=VALUE_NAMES,
        help="value function (default answer_log_prob when --data holds answer labels [B, T], else log_odds)",
    )
    analyze.add_argument("--ratio", type=float, default=0.05, help="salience threshold ratio (default 0.05)")
    analyze.add_argument(
        "--baseline",
        help="baseline of masked players: zero, mean (of the inputs in --data) or a number (default: the player kind's)",
    )
    analyze.add_argument(
        "--baselines",
        help="comma-separated baselines, e.g. zero,mean: one run per baseline in <log-dir>/baseline-<name>, and whether the band ordering agrees across them",
    )
    analyze.add_argument(
        "--probes", type=int, help="use K probes drawn stratified by label (default: every sample in --data)"
    )
    analyze.add_argument("--seed", type=int, default=0, help="seed of the --probes draw (default 0)")
    analyze.add_argument(
        "--mask-token-id", type=int, help="token id of masked words (tokens players; default the tokenizer's)"
    )
    analyze.add_argument("--batch-size", type=int, help="rows per forward (default automatic)")
    analyze.add_argument("--device", help="cpu, cuda, cuda:1, ... (default cuda when available)")
    analyze.set_defaults(func=_run_analyze)

    rep = sub.add_parser(
        "report",
        help="summarize tracked runs in a table and a self-contained HTML report",
        description="Read the stored interactions, sampled order spectra and TensorBoard scalars of one or "
        "more runs, print a summary per band and run (the sampled spectrum's estimates in their own table), "
        "and optionally write an HTML report with figures.",
    )
    rep.add_argument("log_dirs", nargs="+", metavar="LOG_DIR", help="tracker log directories")
    rep.add_argument("--html", help="write a self-contained HTML report here")
    rep.add_argument("--force", action="store_true", help="overwrite an existing --html file")
    rep.add_argument(
        "--ratio",
        type=float,
        help="salience threshold ratio (default: the one each run was tracked with, as stored with its interactions; 0.05 for runs stored without it)",
    )
    rep.add_argument(
        "--simple-max", type=int, help="highest order of the simple band (default: the stored cut-off, else n//3)"
    )
    rep.add_argument(
        "--complex-min", type=int, help="lowest order of the complex band (default: the stored cut-off, else n//2+1)"
    )
    rep.set_defaults(func=_run_report)
    return parser


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``concept-tracker`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, ValueError, OSError, ImportError) as err:
        # Library and loader errors name the parameter or path: the message is the help.
        print(f"concept-tracker {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"concept-tracker {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
