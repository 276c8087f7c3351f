"""What the pruning rounds leave in the run directory, and how ``--resume`` reads it back.

Each finished round writes its ticket as a cwtool checkpoint (architecture + channel plan + weights, loadable on its
own), the rewind point and the next round's starting weights where the method needs them, then its summary, written
last: a round is done when its summary is there. A final fine-tuning writes its weights, then its summary. Only
rank 0 of a torchrun job writes. Everything read back is a file like any other: a damaged one is bad input, named;
the verdicts are measured again from the weights by the caller, never taken from a summary.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import torch

from toolchain import distributed
from toolchain.errors import UserError, describe, one_line
from toolchain.file_identity import check_unchanged, identity
from toolchain.io import atomic_write_bytes, atomic_write_json
from toolchain.models.loading import load_weights, save_checkpoint
from toolchain.provenance import file_sha256
from toolchain.prune.tickets import Survivors, Ticket, removed_plan
from toolchain.rundir import RunDir, read_record

FIX = "remove its rounds/ folder to start the pruning over, or use another --out"  # a damaged round's way out


class RoundFiles:
    def __init__(self, run_dir: RunDir | None, arch: str | None, arch_kwargs: dict, input_shape: tuple[int, ...],
                 dense_sizes: dict[str, int]):
        self.run_dir = run_dir
        self.arch, self.arch_kwargs, self.input_shape, self.dense_sizes = arch, arch_kwargs, input_shape, dense_sizes
        self.training: dict = {}  # the retraining's resolved arithmetic, in every round's summary (saved_training)
        self._hashed: dict[str, tuple | None] = {}  # a file's identity when its sha256 was checked: the file then loaded

    def _writes(self) -> bool:
        return self.run_dir is not None and distributed.is_main()  # under torchrun, rank 0 writes the run directory

    # --- writing ------------------------------------------------------------------------------------------

    def save_round(self, ticket: Ticket, multipliers: dict[int, float], rewind_model=None, rewind_survivors=None,
                   start_state: dict | None = None) -> None:
        if not self._writes():
            return
        run = self.run_dir
        device = next((p.device for p in ticket.model.parameters()), torch.device("cpu"))
        extra = _interned({"round": ticket.round, "offsets": {str(k): v for k, v in ticket.offsets.items()}, "survivors": ticket.survivors})
        save_checkpoint(run.round_checkpoint(ticket.round), ticket.model.cpu(), self.arch or "?", self.arch_kwargs, self.input_shape,
                        _interned(removed_plan(self.dense_sizes, ticket.survivors)), extra)
        ticket.model.to(device)
        also = {}  # the other files a resume reads, named by their bytes as the weights are
        if rewind_model is not None and ticket.round == 1:
            _save_tensors(run.rewind, {"state_dict": rewind_model.state_dict(), "survivors": _interned(rewind_survivors)})
            also["rewind_sha256"] = file_sha256(run.rewind)
        if start_state is not None:  # the next round's magnitude increase needs it
            _save_tensors(run.round_start(ticket.round), {k: v.cpu() for k, v in start_state.items()})
            also["start_sha256"] = file_sha256(run.round_start(ticket.round))
        atomic_write_json(run.round_summary(ticket.round),  # written last: it marks the round done
                          {**ticket.summary(), "multipliers": {str(k): v for k, v in multipliers.items()}, "training": self.training,
                           "run_id": self._run_id(), "weights_sha256": file_sha256(run.round_checkpoint(ticket.round)), **also})

    def _manifest(self) -> dict:
        """The manifest beside the rounds (written before round 1), or {}."""
        try:
            manifest = read_record(self.run_dir.manifest, FIX)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            return {}
        return manifest if isinstance(manifest, dict) else {}

    def _run_id(self, manifest: dict | None = None) -> str | None:
        """A round names the run it belongs to by the manifest's run id (``manifest``: one already read)."""
        run_id = (self._manifest() if manifest is None else manifest).get("run_id")
        return run_id if isinstance(run_id, str) else None

    def save_final(self, ticket: Ticket, epochs: int) -> None:
        if not self._writes():
            return
        _save_tensors(self.run_dir.final_checkpoint(ticket.round), {k: v.detach().cpu() for k, v in ticket.model.state_dict().items()})
        atomic_write_json(self.run_dir.final_summary(ticket.round),  # written last: it marks the fine-tuning done
                          {**ticket.summary(), "epochs": epochs, "run_id": self._run_id(),
                           "weights_sha256": file_sha256(self.run_dir.final_checkpoint(ticket.round))})

    # --- reading back (--resume) -----------------------------------------------------------------------------

    def read(self, load, final_round: int | None = None):
        """``load()``, a damaged file turned into bad input that names the run directory (``final_round``: the files of
        that round's final fine-tuning are what is read, and removing them alone redoes it)."""
        try:
            return load()
        except UserError:
            raise
        except PermissionError as exc:  # the files may be whole: removing the rounds, as for damage, would lose them
            where = f"'{exc.filename}'" if exc.filename else f"a round's file in '{self.run_dir.root}'"
            raise UserError(f"cannot read {where} (permission denied): give this user access to the run's files, then --resume "
                            "again") from exc
        except (MemoryError, OSError, EOFError, KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise self.damaged(describe(exc, 120), final_round) from exc
        except Exception as exc:  # the unpickler's own errors
            if type(exc).__module__.startswith(("pickle", "_pickle", "torch")):
                raise self.damaged(type(exc).__name__, final_round) from exc
            raise

    def damaged(self, what: str, final_round: int | None = None) -> UserError:
        """The refusal of a damaged round file, and how to go on (``final_round``: a final fine-tuning's files)."""
        fix = (FIX if final_round is None else
               f"remove rounds/final_{final_round}.pt and rounds/final_{final_round}.json to redo the final fine-tuning, or use "
               "another --out")
        return UserError(f"'{self.run_dir.root}' holds a damaged round ({what}): {fix}")

    def done_rounds(self) -> list[int]:
        """The finished rounds, 1..N: a gap means a round's summary went missing, and the rounds after it would be
        resumed without it."""
        done = self.run_dir.done_rounds() if self.run_dir is not None else []
        missing = sorted(set(range(1, max(done, default=0) + 1)) - set(done))
        if missing:
            raise ValueError(f"round {missing[0]} has no summary (rounds/round_{missing[0]}.json) but a later round has")
        return done

    def saved_round(self, r: int, protected: list[int]) -> tuple[Survivors, dict, dict[int, float], dict[str, float]]:
        """(survivors, weights, Lagrange multipliers, timings) of finished round ``r``, checked to be the files round ``r``
        of this run wrote: its summary names the run and the weights' sha256 (a run whose manifest lacks round_identity
        was begun before rounds named themselves: a summary without the names is taken as it is)."""
        path = self.run_dir.round_checkpoint(r)
        summary = self._round_summary(r)
        ckpt = self._load(path)
        survivors = self._survivors(ckpt["extra"]["survivors"], path.name)
        return survivors, _finite(ckpt["state_dict"], path.name), _multipliers(summary, protected), _seconds(summary)

    def _round_summary(self, r: int) -> dict:
        """Finished round ``r``'s summary, checked to be round ``r``'s of this run and to name its weights' bytes."""
        summary = read_record(self.run_dir.round_summary(r), FIX)
        if not isinstance(summary, dict):
            raise ValueError(f"rounds/round_{r}.json is not a round summary")
        if type(summary.get("round")) is not int or summary["round"] != r:  # true == 1 in Python
            raise ValueError(f"rounds/round_{r}.json is the summary of round {one_line(summary.get('round'))[:20]}")
        self._check_identity(summary, self.run_dir.round_summary(r), self.run_dir.round_checkpoint(r), f"round {r}")
        return summary

    def check_saved(self) -> None:
        """Every finished round's and final fine-tuning's summary and weights are this run's (their bytes, not yet their
        contents): read before --resume says anything or rewrites the manifest, so that a damaged round is one line of bad
        input, not the end of a run's first lines."""
        self.read(lambda: [self._round_summary(r) for r in self.done_rounds()])
        for r in self.final_rounds():
            self.read(lambda: self._final_summary(r), final_round=r)

    def final_rounds(self) -> list[int]:
        """The rounds whose final fine-tuning left a summary (rounds/final_N.json)."""
        if self.run_dir is None or not self.run_dir.rounds.is_dir():
            return []
        found = (re.fullmatch(r"final_([1-9][0-9]{0,5})\.json", p.name) for p in self.run_dir.rounds.iterdir())  # as RunDir.done_rounds
        return sorted(int(m.group(1)) for m in found if m)

    def _final_summary(self, r: int) -> dict:
        """Round ``r``'s final fine-tuning summary, checked as ``saved_final`` reads it: cwtool writes it last, whole, so
        one that is not round ``r``'s is damage (it was taken as nothing done, and the fine-tuning redone in silence)."""
        summary = read_record(self.run_dir.final_summary(r), FIX)
        if not isinstance(summary, dict):
            raise ValueError(f"rounds/final_{r}.json is not a fine-tuning summary")
        if type(summary.get("round")) is not int or summary["round"] != r:
            raise ValueError(f"rounds/final_{r}.json is the summary of round {one_line(summary.get('round'))[:20]}'s fine-tuning")
        self._check_identity(summary, self.run_dir.final_summary(r), self.run_dir.final_checkpoint(r), f"round {r}'s fine-tuning",
                             "final_identity")
        return summary

    def _check_identity(self, summary: dict, summary_path, weights_path, what: str, flag: str = "round_identity") -> None:
        """A summary names the run it belongs to (the manifest's run id) and the sha256 of the weights it marks done; the
        manifest's ``flag`` says its files all do (a run begun before they named themselves: taken as they are)."""
        manifest = self._manifest()
        named = manifest.get(flag) is True
        where = f"rounds/{summary_path.name}"
        if (named or summary.get("run_id") is not None) and summary.get("run_id") != self._run_id(manifest):
            raise ValueError(f"{where} belongs to another run")
        named_bytes = summary.get("weights_sha256")
        if (named or named_bytes is not None) and named_bytes != self._sha256_held(weights_path):
            raise ValueError(f"{weights_path.name} is not the file {what} wrote")

    def saved_training(self) -> dict | None:
        """The arithmetic round 1 was retrained in ({"precision": "fp32" or "bf16", "device": "cpu" or "cuda", "timed": bool}),
        as its summary records it; None where it does not (a run from before, or no round done)."""
        if self.run_dir is None or not self.run_dir.round_summary(1).is_file():
            return None
        summary = read_record(self.run_dir.round_summary(1), FIX)
        saved = summary.get("training") if isinstance(summary, dict) else None
        if (not isinstance(saved, dict) or saved.get("precision") not in ("fp32", "bf16") or saved.get("device") not in ("cpu", "cuda")
                or not isinstance(saved.get("timed"), bool)):
            return None
        return saved

    def saved_rewind(self) -> tuple[dict, Survivors] | None:
        """(weights, survivors) of the rewind point, if round 1 saved one."""
        if self.run_dir is None or not self._named_by_summary(1, "rewind_sha256", self.run_dir.rewind, "the rewind point"):
            return None
        saved = self._load(self.run_dir.rewind)
        return _finite(saved["state_dict"], self.run_dir.rewind.name), self._survivors(saved["survivors"], self.run_dir.rewind.name)

    def _survivors(self, saved, name: str) -> Survivors:
        """The channels a saved file says survive, per channel group of the dense model: every group named, each channel an
        index into the dense group, once (a group of another model was ignored in silence)."""
        if not isinstance(saved, dict) or set(saved) != set(self.dense_sizes):
            raise ValueError(f"{name} names other channel groups than the dense model's")
        for key, kept in saved.items():
            if (not isinstance(kept, (list, tuple)) or not all(type(i) is int and 0 <= i < self.dense_sizes[key] for i in kept)
                    or len(set(kept)) != len(kept)):
                raise ValueError(f"{name} keeps channels of group {one_line(key)[:60]} that it does not have")
        return {k: list(v) for k, v in saved.items()}

    def saved_start(self, r: int) -> dict | None:
        """The weights round ``r``'s retraining started from, if it saved them."""
        path = self.run_dir.round_start(r) if self.run_dir is not None else None
        if path is None or not self._named_by_summary(r, "start_sha256", path, f"round {r}'s starting weights"):
            return None
        return _finite(self._load(path), path.name)

    def _named_by_summary(self, r: int, key: str, path: Path, what: str) -> bool:
        """Whether ``path`` is there to be read: where round ``r``'s summary names its bytes (``key``), they must be the
        file's (a damaged or swapped rewind point resumed silently into another model; a reviewer's finding), and a file
        it names must be there. A summary from before files were named (the manifest lacks file_identity) is taken as it is."""
        named = self._round_summary(r).get(key)
        if named is None:
            if path.is_file() and self._manifest().get("file_identity") is True:  # its summary would have named it
                raise ValueError(f"{path.name} ({what}) is not named by rounds/round_{r}.json")
            return path.is_file()
        if not path.is_file():
            raise ValueError(f"{path.name} ({what}) is missing")
        if named != self._sha256_held(path):
            raise ValueError(f"{path.name} is not the file round {r} wrote ({what})")
        return True

    def saved_final(self, r: int) -> dict | None:
        """The weights of round ``r``'s finished final fine-tuning, or None."""
        if self.run_dir is None or not self.run_dir.final_summary(r).is_file():
            return None
        self._final_summary(r)
        return _finite(self._load(self.run_dir.final_checkpoint(r)), self.run_dir.final_checkpoint(r).name)

    def _sha256_held(self, path: Path) -> str:
        """The file's sha256, its identity kept from before the read (toolchain.file_identity)."""
        before = identity(path)
        digest = file_sha256(path)
        self._hashed[str(path)] = before
        return digest

    def _load(self, path: Path):
        """The weights of ``path``, which must be the file whose sha256 was checked, where one was (a file renamed over it
        between the check and the load was loaded unchecked)."""
        weights = load_weights(path)
        check_unchanged(path, self._hashed.get(str(path)), "round file")
        return weights


def _finite(weights, name: str):
    """``weights`` (a state dict) when every floating-point tensor in it is finite: a round cwtool wrote always is (a
    diverged retraining stops before its round is saved), so NaN or inf there is damage, not a training to redo."""
    if not isinstance(weights, dict):
        raise ValueError(f"{name} holds no weights")
    for key, value in weights.items():
        # a view that declares more values than its file stores (one zero expanded to 1e9) passes the load's memory cap,
        # and any check of its values then builds them all: cwtool saves every tensor whole
        if isinstance(value, torch.Tensor) and value.numel() * value.element_size() > value.untyped_storage().nbytes():
            raise ValueError(f"{name} declares more values in {str(key)[:80]} ({value.numel():,}) than it stores")
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{name} holds non-finite values in {str(key)[:80]}")
    return weights


def _multipliers(summary, protected: list[int]) -> dict[int, float]:
    """The Lagrange multipliers a round file saved (the one state a round's model cannot give back), checked."""
    saved = summary.get("multipliers") if isinstance(summary, dict) else None
    if saved is None:
        return {}
    # the range first: an integer of 400 digits has no float for isfinite (OverflowError)
    if not isinstance(saved, dict) or set(saved) != {str(p) for p in protected} or not all(
            _plain_number(v) and 0 <= v <= 1e6 and math.isfinite(v) for v in saved.values()):
        raise ValueError("its Lagrange multipliers are not one non-negative number per protected class")
    return {int(k): float(v) for k, v in saved.items()}


def _seconds(summary) -> dict[str, float]:
    """A round's timings, for the report only: dropped unless they are plain numbers."""
    laps = summary.get("seconds") if isinstance(summary, dict) else None
    if isinstance(laps, dict) and all(isinstance(k, str) and _plain_number(v) and abs(v) <= 1e12 and math.isfinite(v)
                                      for k, v in laps.items()):
        return {k: float(v) for k, v in laps.items()}
    return {}


def _plain_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _interned(value):
    """``value`` (dicts, lists and strings) rebuilt with every string interned: pickle writes an object it has met before as
    a reference, so equal names shared in one run (a round's survivors and its plan) and read back apart after a resume
    made the same round other bytes. Interned, equal strings are one object in both."""
    import sys

    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {_interned(k): _interned(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_interned(v) for v in value)
    return value


def _save_tensors(path: Path, payload) -> None:
    """``torch.save`` through a buffer: saved to the staged file's own name, the zip named its folder after it, and the
    same tensors made other bytes (another sha256 in the round's summary) every run."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
