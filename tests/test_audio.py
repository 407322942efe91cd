import numpy as np
import pytest
from conftest import write_wav

from seld_d2.acoustics.audio import AudioError, check_wav, read_wav


def test_good_wav(tmp_path):
    path = tmp_path / "ok.wav"
    write_wav(path, np.zeros((4800, 4), np.float32))
    audio, info = read_wav(path)
    assert audio.shape == (4800, 4) and audio.dtype == np.float32
    assert info.num_frames == 2 and info.channels == 4


@pytest.mark.parametrize(
    "name,audio,fs,message",
    [
        ("rate.wav", np.zeros((4800, 4)), 16000, "sample rate is 16000 Hz, expected 24000 Hz"),
        ("chans.wav", np.zeros((4800, 2)), 24000, "has 2 channels, expected 4"),
        ("short.wav", np.zeros((100, 4)), 24000, "too short: 100 samples"),
    ],
)
def test_header_problems_name_file_and_problem(tmp_path, name, audio, fs, message):
    path = tmp_path / name
    write_wav(path, audio, fs)
    with pytest.raises(AudioError) as err:
        check_wav(path)
    text = str(err.value)
    assert text.startswith(str(path) + ": ") and message in text and "\n" not in text


def test_nan_missing_and_garbage(tmp_path):
    audio = np.zeros((4800, 4), np.float32)
    audio[1234, 2] = np.nan
    write_wav(tmp_path / "nan.wav", audio)
    with pytest.raises(AudioError, match="NaN/inf samples \\(first at sample 1234\\)"):
        read_wav(tmp_path / "nan.wav")
    with pytest.raises(AudioError, match="file not found"):
        check_wav(tmp_path / "nope.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="not a readable audio file"):
        check_wav(tmp_path / "junk.wav")


def test_32_channel_allowed_when_asked(tmp_path):
    write_wav(tmp_path / "em.wav", np.zeros((2400, 32), np.float32))
    assert check_wav(tmp_path / "em.wav", channels=(4, 32)).channels == 32


def test_truncated_empty_and_unreadable(tmp_path, monkeypatch):
    import errno
    import os

    from seld_d2.acoustics import audio as A

    path = tmp_path / "cut.wav"
    write_wav(path, np.zeros((24000, 4), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError) as err:
        check_wav(path)
    assert str(err.value).startswith(f"{path}: truncated: its data chunk holds ")
    assert "bytes its header declares (50.0%)" in str(err.value)
    path.write_bytes(data)  # whole again; an odd-sized chunk before "data" is skipped with its pad byte
    assert check_wav(path).num_samples == 24000 and A.wav_data_shortfall(path) is None

    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav: empty file \\(0 bytes\\)$"):
        check_wav(tmp_path / "empty.wav")

    locked = tmp_path / "locked.wav"
    write_wav(locked, np.zeros((4800, 4), np.float32))
    if os.geteuid() != 0:
        locked.chmod(0)
    else:  # root reads a mode-000 file: refuse the open as the kernel would for another user

        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(locked))

        monkeypatch.setattr(A, "open", refuse, raising=False)
    with pytest.raises(AudioError, match="locked.wav: permission denied$"):
        check_wav(locked)
