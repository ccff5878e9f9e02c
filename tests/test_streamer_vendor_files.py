"""Vendor files (issue 16): Gatan DM3/DM4 and Velox EMD through rosettasciio, Nion .h5/.ndata,
TIFF stacks frame by frame; damaged files stop cleanly and say which frames were read.

Every file is made here: DM and Velox files by the minimal writers in ``_vendor_files`` (built
from the formats' layouts), Nion files by nionswift's own storage handlers where nionswift is
installed (and a minimal h5py-built one otherwise), TIFF by tifffile.
"""

from __future__ import annotations

import datetime
import json
import sys

import numpy as np
import pytest

from streamer.importers import FileImportError, open_frames

from _vendor_files import write_dm, write_velox

T0 = 1777630923.0      # 2026-05-01 10:22:03 UTC


def _stack(n=3, h=20, w=24, dtype=np.uint16, seed=0):
    return np.random.default_rng(seed).integers(0, 60000, (n, h, w)).astype(dtype)


def _rsciio():
    pytest.importorskip("rsciio", reason="the [io] extra is not installed (pip install 'stemwatch[io]')")


DM_TAGS = {"Microscope Info": {"Voltage": 60000.0, "Name": "Test STEM", "Operation Mode": "SCANNING"},
           "DataBar": {"Acquisition Date": "5/1/2026", "Acquisition Time": "10:22:03 AM"}}


@pytest.mark.parametrize("version", [3, 4])
def test_dm_stack_with_calibration_times_and_metadata(tmp_path, version):
    _rsciio()
    t0 = datetime.datetime(2026, 5, 1, 10, 22, 3).timestamp()     # DM stores the PC's local date/time
    s = _stack()
    path = tmp_path / f"insitu.dm{version}"
    write_dm(path, s, version=version, scale=0.0089, units="nm", frame_scale=0.5, frame_units="s", tags=DM_TAGS)
    frames = list(open_frames(path))
    assert len(frames) == 3 and [f.seq for f in frames] == [0, 1, 2]
    for f, want in zip(frames, s):
        assert f.data.dtype == np.dtype("<u2") and f.data.shape == (20, 24)
        assert np.array_equal(f.data, want)
        assert f.pixel_size_A == pytest.approx(0.089)
    assert [f.t_acquired for f in frames] == pytest.approx([t0, t0 + 0.5, t0 + 1.0])
    m = frames[0].meta
    assert m["high_tension_V"] == 60000.0 and m["dm.Microscope Info.Name"] == "Test STEM"
    assert m["frame_time_s"] == 0.5 and m["frames_in_file"] == 3 and m["source"] == "gatan-dm"


def test_dm_single_image_in_angstrom(tmp_path):
    _rsciio()
    img = _stack(n=1, dtype=np.float32)[0]
    write_dm(tmp_path / "one.dm3", img, scale=0.9, units="Å")
    (f,) = open_frames(tmp_path / "one.dm3")
    assert f.pixel_size_A == pytest.approx(0.9) and f.data.dtype == np.dtype("<f4")
    assert np.array_equal(f.data, img)


def test_damaged_dm_file_is_one_clear_error(tmp_path):
    _rsciio()
    path = tmp_path / "cut.dm4"
    write_dm(path, _stack(), version=4, tags=DM_TAGS)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FileImportError, match="cut.dm4: not a readable .dm4 file"):
        list(open_frames(path))


def test_velox_emd_detector_calibration_times_metadata(tmp_path):
    _rsciio()
    s = _stack(dtype=np.float32)
    path = tmp_path / "velox.emd"
    write_velox(path, {"DF4-A": s[:, ::-1], "HAADF": s}, pixel_size_m=5e-11, frame_time_s=0.5, start_unix_s=T0)
    frames = list(open_frames(path))                      # HAADF by default
    assert len(frames) == 3
    assert all(np.array_equal(f.data, want) for f, want in zip(frames, s))
    assert frames[0].pixel_size_A == pytest.approx(0.5)
    assert [f.t_acquired for f in frames] == pytest.approx([T0, T0 + 0.5, T0 + 1.0])
    m = frames[0].meta
    assert m["detector"] == "HAADF" and m["high_tension_V"] == 60000.0 and m["dwell_s"] == pytest.approx(2e-6)
    assert m["velox.Instrument.InstrumentModel"] == "Test STEM"
    other = list(open_frames(path, key="DF4-A"))
    assert np.array_equal(other[1].data, s[1, ::-1]) and other[0].meta["detector"] == "DF4-A"
    with pytest.raises(FileImportError, match="no detector 'BF'"):
        list(open_frames(path, key="BF"))


def test_berkeley_emd_still_goes_to_the_emd_reader(tmp_path):
    from streamer.frame import Frame
    from streamer.importers import export_emd

    s = _stack(dtype=np.float32)
    export_emd([Frame(data=a, series="s", seq=i, t_acquired=100.0 + i, pixel_size_A=0.1) for i, a in enumerate(s)],
               tmp_path / "b.emd")
    frames = list(open_frames(tmp_path / "b.emd"))
    assert [f.t_acquired for f in frames] == [100.0, 101.0, 102.0] and frames[0].pixel_size_A == pytest.approx(0.1)


def test_missing_io_extra_names_it(tmp_path, monkeypatch, capsys):
    write_dm(tmp_path / "x.dm3", _stack())
    for name in ("rsciio", "rsciio.digitalmicrograph", "rsciio.emd"):
        monkeypatch.setitem(sys.modules, name, None)        # as if rosettasciio were not installed
    with pytest.raises(FileImportError, match=r"optional extra \[io\].*pip install 'stemwatch\[io\]'"):
        list(open_frames(tmp_path / "x.dm3"))
    from stemwatch.cli import main
    assert main(["analyze", str(tmp_path / "x.dm3"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[io]" in err[0] and "Traceback" not in err[0]


# ------------------------------------------------------------------------------------ Nion

PROPS = {"created": "2026-05-01T10:22:03", "timezone": "Etc/UTC", "title": "HAADF movie",
         "is_sequence": True, "collection_dimension_count": 0, "datum_dimension_count": 2,
         "dimensional_calibrations": [{"offset": 0, "scale": 0.25, "units": "s"},
                                      {"offset": 0, "scale": 0.0089, "units": "nm"},
                                      {"offset": 0, "scale": 0.0089, "units": "nm"}],
         "metadata": {"hardware_source": {"channel_name": "HAADF", "pixel_time_us": 2.0, "frame_index": 7},
                      "instrument": {"high_tension": 60000.0}}}


def _minimal_nion_h5(path, data, props):
    import h5py

    with h5py.File(path, "w") as f:
        d = f.create_dataset("data", data=data, chunks=(1,) + data.shape[1:] if data.ndim == 3 else None,
                             compression="gzip" if data.ndim == 3 else None)
        d.attrs["properties"] = json.dumps(props)


def _check_nion(frames, s):
    assert len(frames) == len(s) and [f.seq for f in frames] == list(range(len(s)))
    assert all(np.array_equal(f.data, want) for f, want in zip(frames, s))
    assert frames[0].pixel_size_A == pytest.approx(0.089)
    assert [f.t_acquired for f in frames] == pytest.approx([T0 + 0.25 * i for i in range(len(s))])
    m = frames[0].meta
    assert m["channel"] == "HAADF" and m["high_tension_V"] == 60000.0 and m["dwell_s"] == pytest.approx(2e-6)
    assert m["nion_hardware_source.frame_index"] == 7 and m["title"] == "HAADF movie"


def test_nion_h5_minimal(tmp_path):
    s = _stack(dtype=np.float32)
    _minimal_nion_h5(tmp_path / "item.h5", s, PROPS)
    _check_nion(list(open_frames(tmp_path / "item.h5")), s)


def test_nion_h5_with_a_damaged_frame_stops_after_the_good_ones(tmp_path):
    import h5py

    s = _stack(n=4, dtype=np.float32)
    path = tmp_path / "item.h5"
    _minimal_nion_h5(path, s, PROPS)
    with h5py.File(path, "r") as f:
        off, size = f["data"].id.get_chunk_info(3).byte_offset, f["data"].id.get_chunk_info(3).size
    raw = bytearray(path.read_bytes())
    raw[off:off + size] = b"\xff" * size                         # the last frame's compressed chunk is garbage
    path.write_bytes(bytes(raw))
    got = []
    with pytest.raises(FileImportError, match=r"frames 0-2 of 4 were read; frame 3 cannot be read"):
        for f in open_frames(path):
            got.append(f.seq)
    assert got == [0, 1, 2]


def test_nion_files_written_by_nionswift(tmp_path):
    pytest.importorskip("nion.swift", reason="the [nion] extra is not installed (pip install 'stemwatch[nion]')")
    from nion.swift.model import HDF5Handler, NDataHandler

    s = _stack(dtype=np.float32)
    when = datetime.datetime(2026, 5, 1, 10, 22, 3)
    for handler, name in ((HDF5Handler.HDF5Handler, "item.h5"), (NDataHandler.NDataHandler, "item.ndata")):
        h = handler(tmp_path / name)
        h.write_properties(PROPS, when)
        h.write_data(s, when)
        h.close()
        _check_nion(list(open_frames(tmp_path / name)), s)


def test_ndata_is_memory_mapped_one_frame_at_a_time(tmp_path, monkeypatch):
    import io
    import zipfile

    s = _stack(n=6, h=64, w=64, dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, s, allow_pickle=False)
    with zipfile.ZipFile(tmp_path / "seq.ndata", "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("data.npy", buf.getvalue())
        z.writestr("metadata.json", json.dumps(PROPS))
    import streamer.importers as imp
    monkeypatch.setattr(imp, "import_memory_limit", lambda: 2 * s[0].nbytes)    # room for one frame, not six
    frames = list(open_frames(tmp_path / "seq.ndata"))
    _check_nion(frames, s)


# ------------------------------------------------------------------------------------ TIFF

def test_tiff_stack_is_read_frame_by_frame(tmp_path, monkeypatch):
    import tifffile

    import streamer.importers as imp

    s = _stack(n=6, h=64, w=64)
    tifffile.imwrite(tmp_path / "s.tif", s, imagej=True, resolution=(1 / 0.089, 1 / 0.089),
                     metadata={"unit": "nm", "finterval": 0.25})
    monkeypatch.setattr(imp, "import_memory_limit", lambda: 2 * s[0].nbytes)    # one frame fits, the stack not
    frames = list(open_frames(tmp_path / "s.tif"))
    assert len(frames) == 6 and all(np.array_equal(f.data, w) for f, w in zip(frames, s))
    assert frames[0].pixel_size_A == pytest.approx(0.89) and frames[-1].t_acquired == pytest.approx(1.25)


def test_cut_tiff_stack_says_which_frames_were_read(tmp_path):
    import tifffile

    s = _stack(n=5)
    tifffile.imwrite(tmp_path / "s.tif", s, imagej=True, metadata={"unit": "nm"}, resolution=(10, 10))
    raw = (tmp_path / "s.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) - 1000])
    got = []
    with pytest.raises(FileImportError, match=r"cut.tif: damaged TIFF stack: frames 0-\d of 5 were read"):
        for f in open_frames(tmp_path / "cut.tif"):
            got.append(f.seq)
    assert got and got == list(range(len(got))) and len(got) < 5
