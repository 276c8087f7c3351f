"""Model files made to exhaust cwtool rather than to run code (a security reviewer's findings): a small file that reads
as a vast object, declares weights it does not hold, or asks for billions of calls. Each is refused in one line, or read
in bounded time, before any of that work."""

from __future__ import annotations

import io
import pickle
import signal

import pytest
import torch
from torch import nn

from clirun import run_cli


@pytest.fixture
def bounded():
    """A test that hangs fails instead (each of these ran for hours before)."""
    def expired(*_):
        raise TimeoutError("a crafted file held cwtool for over 60 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _digits_checkpoint(tmp_path, **changes):
    from toolchain.models import registry
    from toolchain.models.loading import save_checkpoint

    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", registry.create("digits-cnn"), "digits-cnn", {}, (1, 8, 8))
    checkpoint = torch.load(path, weights_only=True)
    checkpoint.update(changes)
    torch.save(checkpoint, path)
    return path


def test_values_shared_by_reference_are_walked_once(tmp_path, bounded):
    """{'a': d, 'b': d} sixty deep: a 1.9 KB pickle that reads as 2**60 dicts, walked for ever as the classes of its
    modules were given back (--trust-model too: the restricted read comes first)."""
    from toolchain.models.loading import load_model

    shared = {}
    for _ in range(60):
        shared = {"a": shared, "b": shared}
    path = _digits_checkpoint(tmp_path, extra={"notes": shared})
    assert path.stat().st_size < 300_000
    assert load_model(path).arch == "digits-cnn"


def test_arch_kwargs_of_lists_shared_by_reference_are_refused(tmp_path, bounded):
    """[l] * 10,000 seven deep: 10**28 values from a 389 KB file, each level within the 10,000 a level allowed."""
    from toolchain.errors import UserError
    from toolchain.models.loading import load_model

    nested = 0
    for _ in range(7):
        nested = [nested] * 10_000
    path = _digits_checkpoint(tmp_path, arch_kwargs={"x": nested})
    with pytest.raises(UserError, match="damaged cwtool checkpoint \\(arch_kwargs is not a JSON object\\)"):
        load_model(path)


def test_a_channel_plan_of_one_list_under_many_names_is_refused_before_its_walk(tmp_path, bounded):
    """One list of 2**20 channel indices under 10,000 layer names: a few-MB file that reads as 10**10 indices, each
    name within the 2**20 a layer allowed."""
    from toolchain.errors import UserError
    from toolchain.models.loading import load_model

    indices = list(range(1 << 20))
    path = _digits_checkpoint(tmp_path, channel_plan={f"layer{i}": indices for i in range(10_000)})
    assert path.stat().st_size < 20_000_000
    with pytest.raises(UserError, match="damaged cwtool checkpoint \\(channel_plan holds over 16,777,216 channel indices\\)"):
        load_model(path)


def test_a_pickled_model_whose_module_is_used_ten_billion_times_is_refused(tmp_path, bounded):
    """nn.Sequential(*[s] * 100) five deep around one ReLU: a 13 KB file, 10**10 calls a forward pass (about 30 hours)."""
    from toolchain.errors import UserError
    from toolchain.models.loading import load_model

    shared = nn.ReLU()
    for _ in range(5):
        shared = nn.Sequential(*[shared] * 100)
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), shared), tmp_path / "calls.pt")
    with pytest.raises(UserError, match=r"its modules used in 10,101,010,104 places .* more than 100,000"):
        load_model(tmp_path / "calls.pt")


def test_expanded_tensors_that_declare_weights_the_file_does_not_hold_are_refused(tmp_path, bounded, capsys):
    """A 1-value tensor expanded to a layer's shape: a 22 KB checkpoint whose arch_kwargs widen the model declared 906
    million parameters (6.3 GB, minutes a pass), a 3.5 KB pickled model a 5 GB layer."""
    from toolchain.errors import UserError
    from toolchain.models import registry
    from toolchain.models.loading import load_model

    with torch.device("meta"):  # the shapes alone: the test allocates none of it
        wide = registry.create("digits-cnn", width=4096).state_dict()
    path = _digits_checkpoint(tmp_path, arch_kwargs={"width": 4096},
                              state_dict={k: torch.full((1,) * v.dim(), 0.01, dtype=v.dtype).expand(v.shape) for k, v in wide.items()})
    assert path.stat().st_size < 100_000
    code, _, err = run_cli(["evaluate", path, "-d", "digits", "-p", "3"], capsys)
    assert code == 2 and "values over 4 bytes of the file (an expanded tensor)" in err and err.count("\n") == 1, err
    layer = nn.Linear(64, 10)  # the file's own layer, made big by its weight alone
    layer.weight = nn.Parameter(torch.full((1,), 0.01).expand(1_000_000, 64))
    torch.save(nn.Sequential(nn.Flatten(), layer), tmp_path / "pickled.pt")
    with pytest.raises(UserError, match=r"parameter weight of 1 that is 64,000,000 values over 4 bytes of the file"):
        load_model(tmp_path / "pickled.pt")


def test_a_small_broadcast_buffer_as_real_code_saves_it_still_loads(tmp_path):
    """torch.ones(1).expand(16) as a BatchNorm's running_var, or a registered buffer: stored as one value, loaded as
    before (the regression reviewer's: the first check refused any expanded tensor)."""
    from toolchain.models import registry
    from toolchain.models.loading import load_model

    model = registry.create("digits-cnn")
    state = model.state_dict()
    name = next(k for k in state if k.endswith("running_var"))
    state[name] = torch.ones(1).expand(state[name].shape)
    torch.save(state, tmp_path / "sd.pt")
    assert torch.equal(load_model(tmp_path / "sd.pt", arch="digits-cnn").module.state_dict()[name], torch.ones(state[name].shape))
    pickled = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    pickled.register_buffer("scale", torch.ones(1).expand(4))
    torch.save(pickled, tmp_path / "pickled.pt")
    assert load_model(tmp_path / "pickled.pt").module.scale.tolist() == [1.0] * 4


def test_a_nested_tensor_in_a_state_dict_is_bad_input_not_a_bug(tmp_path, capsys):
    """Its shape was read before anything checked it: 'NestedTensorImpl doesn't support sizes', exit 3."""
    from toolchain.models import registry

    state = registry.create("digits-cnn").state_dict()
    state["classifier.weight"] = torch.nested.nested_tensor([state["classifier.weight"][0], state["classifier.weight"][1]])
    torch.save(state, tmp_path / "nested.pt")
    code, _, err = run_cli(["evaluate", tmp_path / "nested.pt", "--arch", "digits-cnn", "-d", "digits", "-p", "3"], capsys)
    assert code == 2 and "classifier.weight in the file is a nested tensor" in err, err


def test_a_legacy_file_that_stores_no_storage_is_refused_not_read_from_memory(tmp_path, capsys):
    """The legacy format lists the storages whose bytes follow; a list of none left every weight as allocated: a 2.1 KB
    file "held" a model made of the process's leftover memory (a secret read back 414 times)."""
    from toolchain.models import registry

    buffer = io.BytesIO()
    torch.save(registry.create("digits-cnn").state_dict(), buffer, _use_new_zipfile_serialization=False)
    raw = io.BytesIO(buffer.getvalue())

    class Anything(dict):  # takes items and attributes: what a pickle builds, unused
        pass

    class Skipping(pickle.Unpickler):  # reads past a pickle without building what it names
        def persistent_load(self, pid):
            return None

        def find_class(self, module, name):
            return lambda *args, **kwargs: Anything()

    for _ in range(4):  # magic number, protocol, system info, the state dict itself
        Skipping(raw).load()
    (tmp_path / "empty.pt").write_bytes(buffer.getvalue()[:raw.tell()] + pickle.dumps([], protocol=2))
    code, _, err = run_cli(["evaluate", tmp_path / "empty.pt", "--arch", "digits-cnn", "-d", "digits", "-p", "3"], capsys)
    assert code == 2 and "so their values were never stored in it" in err, err
