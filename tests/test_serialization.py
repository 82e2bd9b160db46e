"""The .anw weights format (appealnet.serialization) and weights interchange
with PyTorch, safetensors and numpy (appealnet.interchange)."""
import json
import os
import struct
import sys
import types
import zlib

import numpy as np
import pytest

import appealnet as an
from appealnet import interchange, nn, serialization
from appealnet.serialization import MAGIC


def small_net(width=4, classes=3):
    """Conv/BN/Linear: parameters, buffers and a 0-d num_batches_tracked."""
    net = nn.Sequential(nn.Conv2d(2, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))
    net.arch = {"name": "small_net", "kwargs": {"width": width, "classes": classes}}
    return net


def randomise(model, seed=0):
    """Distinct values in every tensor (BN stats and counter too), so a
    round trip that swapped or dropped anything would show."""
    rng = np.random.default_rng(seed)
    state = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in
             model.state_dict().items()}
    for key in state:
        if key.endswith("running_var"):
            state[key] = np.abs(state[key]) + 0.5
        if key.endswith("num_batches_tracked"):
            state[key] = np.float32(7)
    model.load_state_dict(state)
    return model


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


@pytest.fixture
def fake_zoo(monkeypatch):
    """appealnet.models.create for small_net, whatever the real zoo holds."""
    zoo = types.ModuleType("appealnet.models")
    calls = []

    def create(name, **kwargs):
        calls.append((name, kwargs))
        if name != "small_net":
            raise ValueError(f"unknown model {name!r}")
        return small_net(**kwargs)

    zoo.create = create
    monkeypatch.setitem(sys.modules, "appealnet.models", zoo)
    monkeypatch.setattr(an, "models", zoo, raising=False)
    return calls


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "net.anw"
    model = randomise(small_net())
    serialization.save(model, path, metadata={"epoch": 3, "note": "é"})
    return path, model


# ------------------------------------------------------------- round trips
def test_save_load_round_trip_rebuilds_from_arch(saved, fake_zoo):
    path, model = saved
    loaded = an.serialization.load(path)
    assert fake_zoo == [("small_net", {"width": 4, "classes": 3})]
    assert_same_state(model, loaded)
    x = an.randn(2, 2, 5, 5)
    model.eval(), loaded.eval()
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))


def test_load_into_given_model_and_header_contents(saved):
    path, model = saved
    target = small_net()
    assert serialization.load(path, model=target) is target
    assert_same_state(model, target)
    header = serialization.read_header(path)
    assert header["arch"] == {"name": "small_net", "kwargs": {"width": 4, "classes": 3}}
    assert header["metadata"] == {"epoch": 3, "note": "é"}
    assert header["appealnet_version"] == an.__version__
    assert header["kind"] == "model"
    names = [t["name"] for t in header["tensors"]]
    assert names == list(model.state_dict())
    counter = header["tensors"][names.index("1.num_batches_tracked")]
    assert counter["shape"] == [] and counter["dtype"] == "float32"


def test_file_layout_matches_the_documented_format(saved):
    path, model = saved
    blob = path.read_bytes()
    magic, version, header_crc, header_length = struct.unpack_from("<8sIIQ", blob)
    assert magic == MAGIC == b"\x89ANW\r\n\x1a\n" and version == 1
    header_bytes = blob[24:24 + header_length]
    assert zlib.crc32(header_bytes) == header_crc
    header = json.loads(header_bytes)
    data_start = -(-(24 + header_length) // 64) * 64
    assert len(blob) == data_start + header["data_length"]
    for entry, (key, value) in zip(header["tensors"], model.state_dict().items()):
        assert entry["offset"] % 64 == 0
        raw = blob[data_start + entry["offset"]:data_start + entry["offset"] + entry["length"]]
        assert zlib.crc32(raw) == entry["crc32"]
        np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(value.shape), value)


def test_state_dict_file_round_trip_keeps_order_and_odd_shapes(tmp_path):
    state = {"z.last": np.arange(6, dtype=np.float64).reshape(2, 3),  # stored as float32
             "a.scalar": np.float32(2.5), "m.empty": np.zeros((0, 4), np.float32),
             "ints": np.array([1, 2, 3]), "tensor": an.tensor([[1.0, -2.0]])}
    path = tmp_path / "plain.anw"
    serialization.save_state_dict(state, path, metadata={"source": "test"})
    loaded = serialization.load_state_dict_file(path)
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert loaded[key].dtype == np.float32
        np.testing.assert_array_equal(loaded[key], np.asarray(value, dtype=np.float32))
    assert loaded["a.scalar"].shape == () and loaded["m.empty"].shape == (0, 4)
    with pytest.raises(ValueError, match="records no architecture.*pass model="):
        serialization.load(path)


def test_model_without_arch_saves_and_needs_a_model_to_load(tmp_path):
    net = randomise(nn.Sequential(nn.Linear(3, 2)))
    path = tmp_path / "noarch.anw"
    serialization.save(net, path)
    assert serialization.read_header(path)["arch"] is None
    with pytest.raises(ValueError, match="records no architecture"):
        serialization.load(path)
    assert_same_state(net, serialization.load(path, model=nn.Sequential(nn.Linear(3, 2))))


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        serialization.save(small_net(), tmp_path / "m.anw", metadata={"f": object()})
    with pytest.raises(TypeError, match="metadata must be a dict"):
        serialization.save(small_net(), tmp_path / "m.anw", metadata=[1])
    with pytest.raises(TypeError, match="save expects a Module"):
        serialization.save({"a": np.ones(2)}, tmp_path / "m.anw")
    net = small_net()
    net.arch = {"name": "x", "kwargs": {"act": nn.ReLU}}
    with pytest.raises(TypeError, match="model.arch must be JSON-serialisable"):
        serialization.save(net, tmp_path / "m.anw")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        serialization.save(small_net(), tmp_path / "missing_dir" / "m.anw")
    assert not (tmp_path / "m.anw").exists()


# --------------------------------------------------------- broken files
def test_truncated_files_are_refused_at_every_cut(saved):
    path, _ = saved
    blob = path.read_bytes()
    header_length = struct.unpack_from("<Q", blob, 16)[0]
    for cut in (10, 23, 24 + header_length // 2, 24 + header_length + 1, len(blob) - 1):
        path.write_bytes(blob[:cut])
        with pytest.raises(ValueError, match="is truncated"):
            serialization.load(path, model=small_net())


def test_files_that_are_not_ours(tmp_path):
    cases = {"empty.anw": b"", "text.anw": b"hello world, not weights\n" * 4,
             "png.anw": b"\x89PNG\r\n\x1a\n" + bytes(64)}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="not an appealnet weights file"):
            serialization.load(tmp_path / name, model=small_net())
    np.savez(tmp_path / "arrays.npz", a=np.ones(3))
    with pytest.raises(ValueError, match="not an appealnet weights file"):
        serialization.load_state_dict_file(tmp_path / "arrays.npz")


def test_unknown_version_is_refused(saved):
    path, _ = saved
    blob = bytearray(path.read_bytes())
    blob[8:12] = struct.pack("<I", 2)
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="format version 2.*reads version 1 only"):
        serialization.load(path, model=small_net())


def test_tampered_tensor_bytes_name_the_tensor(saved):
    path, _ = saved
    header = serialization.read_header(path)
    entry = next(t for t in header["tensors"] if t["name"] == "5.weight")
    header_length = struct.unpack_from("<Q", path.read_bytes(), 16)[0]
    data_start = -(-(24 + header_length) // 64) * 64
    blob = bytearray(path.read_bytes())
    blob[data_start + entry["offset"] + 5] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"checksum mismatch in tensor '5\.weight'"):
        serialization.load(path, model=small_net())


def test_tampered_header_and_trailing_bytes(saved):
    path, _ = saved
    original = path.read_bytes()
    blob = bytearray(original)
    blob[30] ^= 0x20
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="header checksum mismatch"):
        serialization.read_header(path)
    path.write_bytes(original + b"\0")
    with pytest.raises(ValueError, match="1 unexpected bytes after the tensor data"):
        serialization.load(path, model=small_net())


def test_header_lying_about_a_tensor_is_refused(tmp_path):
    header = {"format": "appealnet-weights", "kind": "state_dict", "arch": None, "metadata": {},
              "data_length": 8, "tensors": [{"name": "w", "dtype": "float32", "shape": [4],
                                             "offset": 0, "length": 16, "crc32": 0}]}
    raw = json.dumps(header).encode()
    blob = struct.pack("<8sIIQ", MAGIC, 1, zlib.crc32(raw), len(raw)) + raw
    blob += bytes(-len(blob) % 64) + bytes(8)
    (tmp_path / "lie.anw").write_bytes(blob)
    with pytest.raises(ValueError, match=r"tensor 'w' entry \(shape \[4\].*does not fit"):
        serialization.load_state_dict_file(tmp_path / "lie.anw")


def test_architecture_mismatch_names_first_key_and_both_shapes(saved, fake_zoo):
    path, _ = saved
    with pytest.raises(ValueError, match=r"mismatch at key '0\.weight': shape \[4, 2, 3, 3\] in "
                                         r"the file .*, \[6, 2, 3, 3\] in the model"):
        serialization.load(path, model=small_net(width=6))
    with pytest.raises(ValueError, match=r"key '2\.weight' \(shape \[4\]\) is in the model but "
                                         r"not in the file"):
        serialization.load(path, model=nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4),
                                                     nn.BatchNorm2d(4)))
    with pytest.raises(ValueError, match=r"key '5\.weight' \(shape \[3, 4\]\) is in the file "
                                         r".* but not in the model"):
        serialization.load(path, model=nn.Sequential(nn.Conv2d(2, 4, 3, padding=1),
                                                     nn.BatchNorm2d(4)))


def test_unknown_architecture_name_is_a_value_error(tmp_path, fake_zoo):
    net = small_net()
    net.arch = {"name": "no_such_net", "kwargs": {}}
    serialization.save(net, tmp_path / "x.anw")
    with pytest.raises(ValueError, match="cannot rebuild architecture.*unknown model"):
        serialization.load(tmp_path / "x.anw")


# ------------------------------------------------------------- atomicity
def test_failed_write_leaves_previous_file_and_no_temporary(saved):
    path, model = saved
    before = path.read_bytes()

    def half_then_fail(file):
        file.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        serialization.atomic_write(path, half_then_fail)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]
    with pytest.raises(TypeError):
        serialization.save(model, path, metadata={"bad": {1, 2}})
    assert path.read_bytes() == before and os.listdir(path.parent) == [path.name]


def test_written_file_has_ordinary_permissions(saved):
    path, _ = saved
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_real_zoo_models_round_trip(tmp_path):
    models = pytest.importorskip("appealnet.models")
    if not hasattr(models, "TwoHead"):
        pytest.skip("the model zoo is not there yet")
    an.manual_seed(0)
    single = randomise(models.create("shufflenet_v2", num_classes=5, net_size=0.5))
    two_head = randomise(models.TwoHead("resnet8", num_classes=4, predictor="mlp",
                                        predictor_hidden=[8]))
    for model in (single, two_head):
        path = tmp_path / f"{model.arch['name']}.anw"
        serialization.save(model, path, metadata={"dataset": "cifar10"})
        loaded = serialization.load(path)
        assert type(loaded) is type(model) and loaded.arch == model.arch
        assert_same_state(model, loaded)
        x = an.randn(2, 3, 32, 32)
        with an.no_grad():
            expected, got = model.eval()(x), loaded.eval()(x)
        for a, b in zip(expected if isinstance(expected, tuple) else [expected],
                        got if isinstance(got, tuple) else [got]):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ============================================================ interchange
def test_safetensors_round_trip_through_our_reader_and_writer(tmp_path):
    model = randomise(small_net())
    path = tmp_path / "w.safetensors"
    interchange.export_state_dict(model, path, metadata={"format": "pt"})
    tensors, metadata = interchange.read_safetensors(path)
    assert metadata == {"format": "pt"}
    assert list(tensors) == list(model.state_dict())
    target = small_net()
    assert interchange.import_state_dict(target, path) == ([], [])
    assert_same_state(model, target)
    blob = path.read_bytes()
    (header_length,) = struct.unpack_from("<Q", blob)
    assert header_length % 8 == 0
    entry = json.loads(blob[8:8 + header_length])["0.weight"]
    assert entry == {"dtype": "F32", "shape": [4, 2, 3, 3], "data_offsets": [0, 288]}


def _hand_built_safetensors(entries, data):
    header = json.dumps(entries).encode()
    return struct.pack("<Q", len(header)) + header + data


def test_hand_built_safetensors_with_each_float_dtype(tmp_path):
    values = np.array([1.5, -2.0, 0.15625, 384.0], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")  # exact: these fit in 8 mantissa bits
    chunks = [values.astype("<f4").tobytes(), values.astype("<f2").tobytes(),
              values.astype("<f8").tobytes(), bf16.tobytes()]
    entries, offset = {"__metadata__": {"k": "v"}}, 0
    for name, dtype, raw in zip(("f32", "f16", "f64", "bf16"), ("F32", "F16", "F64", "BF16"),
                                chunks):
        entries[name] = {"dtype": dtype, "shape": [2, 2], "data_offsets": [offset,
                                                                           offset + len(raw)]}
        offset += len(raw)
    path = tmp_path / "hand.safetensors"
    path.write_bytes(_hand_built_safetensors(entries, b"".join(chunks)))
    tensors, metadata = interchange.read_safetensors(path)
    assert metadata == {"k": "v"}
    for name in ("f32", "f16", "f64", "bf16"):
        assert tensors[name].dtype == np.float32
        np.testing.assert_array_equal(tensors[name], values.reshape(2, 2), err_msg=name)


def test_safetensors_refuses_other_dtypes_and_corruption(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_hand_built_safetensors(
        {"layer.weight": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)))
    with pytest.raises(ValueError, match=r"tensor 'layer\.weight' has dtype I32; .*F32, F16, "
                                         r"BF16 and F64"):
        interchange.read_safetensors(path)
    # an integer BatchNorm counter is fine (torch stores it as int64)
    path.write_bytes(_hand_built_safetensors(
        {"bn.num_batches_tracked": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]}},
        struct.pack("<q", 12)))
    assert interchange.read_safetensors(path)[0]["bn.num_batches_tracked"] == 12
    path.write_bytes(_hand_built_safetensors(
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(12)))
    with pytest.raises(ValueError, match=r"corrupt or truncated: tensor 'w'"):
        interchange.read_safetensors(path)
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ValueError, match="header length .* does not fit"):
        interchange.read_safetensors(path)
    path.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{}")
    with pytest.raises(ValueError, match="unreadable JSON header"):
        interchange.read_safetensors(path)


def test_file_from_the_safetensors_package_is_read(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(1)
    arrays = {"a.f32": rng.standard_normal((3, 5)).astype(np.float32),
              "b.f16": rng.standard_normal((7,)).astype(np.float16),
              "c.f64": rng.standard_normal((2, 2, 2)),
              "d.scalar": np.array(4.0, np.float32)}
    safetensors_numpy.save_file(arrays, str(tmp_path / "ref.safetensors"),
                                metadata={"who": "safetensors"})
    tensors, metadata = interchange.read_safetensors(tmp_path / "ref.safetensors")
    assert metadata == {"who": "safetensors"}
    for key, value in arrays.items():
        np.testing.assert_array_equal(tensors[key], value.astype(np.float32), err_msg=key)
    # and the reverse: the package reads what we write
    interchange.export_state_dict(arrays, tmp_path / "ours.safetensors")
    back = safetensors_numpy.load_file(str(tmp_path / "ours.safetensors"))
    for key, value in arrays.items():
        np.testing.assert_array_equal(back[key], value.astype(np.float32), err_msg=key)


def test_bfloat16_file_from_torch_safetensors(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    values = torch.randn(4, 6).to(torch.bfloat16)
    safetensors_torch.save_file({"w": values}, str(tmp_path / "bf16.safetensors"))
    tensors, _ = interchange.read_safetensors(tmp_path / "bf16.safetensors")
    np.testing.assert_array_equal(tensors["w"], values.float().numpy())


def torch_twin(torch, width=4, classes=3):
    """small_net in torch, with the same state_dict names."""
    tnn = torch.nn
    return tnn.Sequential(tnn.Conv2d(2, width, 3, padding=1), tnn.BatchNorm2d(width), tnn.ReLU(),
                          tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(width, classes))


@pytest.fixture
def torch_model():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tmodel = torch_twin(torch)
    with torch.no_grad():  # non-trivial BN statistics
        tmodel[1].running_mean.uniform_(-1, 1)
        tmodel[1].running_var.uniform_(0.5, 2)
        tmodel[1].num_batches_tracked.fill_(9)
    return torch, tmodel.eval()


def test_torch_pt_import_gives_identical_outputs(tmp_path, torch_model):
    torch, tmodel = torch_model
    torch.save(tmodel.state_dict(), tmp_path / "twin.pt")
    model = small_net().eval()
    assert interchange.import_state_dict(model, tmp_path / "twin.pt") == ([], [])
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(model(an.tensor(x))), expected, rtol=1e-5, atol=1e-6)
    assert model.state_dict()["1.num_batches_tracked"] == 9


def test_torch_checkpoint_dataparallel_and_safetensors_variants(tmp_path, torch_model):
    torch, tmodel = torch_model
    reference = tmodel.state_dict()
    wrapped = {"epoch": 4, "state_dict": {"module." + k: v for k, v in reference.items()}}
    torch.save(wrapped, tmp_path / "checkpoint.pth")
    model = small_net()
    interchange.import_state_dict(model, tmp_path / "checkpoint.pth")
    for key, value in reference.items():
        np.testing.assert_array_equal(model.state_dict()[key], value.float().numpy())
    pytest.importorskip("safetensors.torch").save_file(reference,
                                                       str(tmp_path / "t.safetensors"))
    other = small_net()
    interchange.import_state_dict(other, tmp_path / "t.safetensors")
    assert_same_state(model, other)
    torch.save(torch.ones(3), tmp_path / "not_a_dict.pt")
    with pytest.raises(ValueError, match="does not hold a state_dict"):
        interchange.import_state_dict(model, tmp_path / "not_a_dict.pt")
    torch.save(tmodel, tmp_path / "whole_model.pt")
    with pytest.raises(ValueError, match="weights_only=True; save model.state_dict"):
        interchange.import_state_dict(model, tmp_path / "whole_model.pt")


def test_export_pt_is_read_by_torch(tmp_path, torch_model):
    torch, tmodel = torch_model
    model = randomise(small_net())
    interchange.export_state_dict(model, tmp_path / "ours.pt")
    loaded = torch.load(tmp_path / "ours.pt", weights_only=True)
    twin = torch_twin(torch)
    twin.load_state_dict(loaded)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(twin.state_dict()[key].float().numpy(), value)


def test_npz_and_dict_sources(tmp_path):
    model = randomise(small_net())
    interchange.export_state_dict(model, tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as archive:
        assert archive.files == list(model.state_dict())
    target = small_net()
    interchange.import_state_dict(target, tmp_path / "w.npz")
    assert_same_state(model, target)
    from_dict = small_net()
    interchange.import_state_dict(from_dict, {k: an.tensor(v) for k, v in
                                              model.state_dict().items()})
    assert_same_state(model, from_dict)
    interchange.export_state_dict(model, tmp_path / "w.anw", metadata={"a": 1})
    anw = small_net()
    interchange.import_state_dict(anw, tmp_path / "w.anw")
    assert_same_state(model, anw)


def test_rename_missing_unexpected_and_shape_errors():
    source = randomise(small_net()).state_dict()
    renamed = {("features." + k if k[0] in "01" else "head." + k[2:]): v
               for k, v in source.items()}
    model = small_net()
    with pytest.raises(ValueError, match=r"missing keys .*'0\.weight'.*unexpected keys .*"
                                         r"'features\.0\.weight'.*use rename="):
        interchange.import_state_dict(model, renamed)
    interchange.import_state_dict(
        model, renamed, rename=lambda k: k.replace("features.", "").replace("head.", "5."))
    np.testing.assert_array_equal(model.state_dict()["5.weight"], source["5.weight"])
    partial = small_net()
    result = interchange.import_state_dict(
        partial, {"5.weight": source["5.weight"], "extra": np.ones(1)},
        rename={"extra": "also.extra"}, strict=False)
    assert result.unexpected_keys == ["also.extra"] and "0.weight" in result.missing_keys
    np.testing.assert_array_equal(partial.state_dict()["5.weight"], source["5.weight"])
    untouched = small_net()
    before = untouched.state_dict()
    bad = dict(source, **{"5.bias": np.ones(7, np.float32)})
    with pytest.raises(ValueError, match=r"shape mismatch for '5\.bias': \[7\] in the source, "
                                         r"\[3\] in the model"):
        interchange.import_state_dict(untouched, bad)
    assert_same_state_dict(untouched.state_dict(), before)  # nothing half-written
    with pytest.raises(ValueError, match="maps two tensors to the same name"):
        interchange.import_state_dict(small_net(), source, rename=lambda k: "same")
    with pytest.raises(ValueError, match=r"tensor '0\.bias' has dtype int64"):
        interchange.import_state_dict(small_net(), dict(source, **{"0.bias": np.arange(4)}))


def assert_same_state_dict(a, b):
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_unknown_sources_and_missing_torch(tmp_path, monkeypatch):
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown weights file type '\.h5'"):
        interchange.import_state_dict(small_net(), tmp_path / "w.h5")
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        interchange.import_state_dict(small_net(), tmp_path / "absent.pt")
    with pytest.raises(TypeError, match="source must be a path or a dict"):
        interchange.import_state_dict(small_net(), 42)
    with pytest.raises(ValueError, match=r"unknown weights file type '\.bin'"):
        interchange.export_state_dict(small_net(), tmp_path / "w.bin")
    (tmp_path / "w.pt").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ImportError, match="needs PyTorch, which is not installed"):
        interchange.import_state_dict(small_net(), tmp_path / "w.pt")
    with pytest.raises(ImportError, match="needs PyTorch"):
        interchange.export_state_dict(small_net(), tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
