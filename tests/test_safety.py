"""Nothing the user did not write is executed: model files are never unpickled, the
workflow's shell commands quote every value, downloads are checked against their checksum."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _cli_fixtures import PAYLOAD, REPO, files_under, local_server


@pytest.fixture(scope="module")
def server():
    with local_server() as url:
        yield url

# =============================================================================== safety

_MARKER: list[str] = []


class _Tripwire:
    """Records (instead of doing harm) if anything ever reconstructs it."""

    def __init__(self):
        self.armed = True

    def __setstate__(self, state):
        _MARKER.append("setstate")
        self.__dict__.update(state)

    def __reduce__(self):
        return (_trip, ("unpickled",))


def _trip(what: str) -> None:
    _MARKER.append(what)


def _model_zip(path: Path, meta: dict, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps(meta))
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _meta(**kw) -> dict:
    meta = {"format_version": 1, "kind": "logreg", "genes": ["COL1A1", "DCN"],
            "classes": ["myCAF", "iCAF"], "calibration": "none"}
    meta.update(kw)
    return meta


def test_model_arrays_holding_a_pickle_are_refused_without_unpickling(tmp_path):
    from cafclassify._errors import ModelError
    from cafclassify.model import CafModel

    buf = io.BytesIO()
    evil = np.empty(1, dtype=object)
    evil[0] = _Tripwire()
    np.savez(buf, coef=evil, intercept=np.zeros(2), feature_mean=np.zeros(2),
             feature_scale=np.ones(2))
    path = _model_zip(tmp_path / "evil_arrays.cafmodel", _meta(), {"arrays.npz": buf.getvalue()})
    # the payload is live: a loader that allowed pickles would run it
    _MARKER.clear()
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=True) as z:
        z["coef"]
    assert _MARKER == ["unpickled"]
    _MARKER.clear()
    with pytest.raises(ModelError) as info:
        CafModel.load(path)
    assert _MARKER == []
    assert str(path) in info.value.message and "What to do" in info.value.message


def test_model_with_an_untrusted_skops_type_is_refused(tmp_path):
    import skops.io as sio

    from cafclassify._errors import ModelError
    from cafclassify.model import CafModel

    buf = io.BytesIO()
    np.savez(buf, feature_mean=np.zeros(2), feature_scale=np.ones(2))
    path = _model_zip(tmp_path / "evil_hgb.cafmodel", _meta(kind="hgb"),
                      {"arrays.npz": buf.getvalue(), "estimator.skops": sio.dumps(_Tripwire())})
    _MARKER.clear()
    with pytest.raises(ModelError, match="allow-list") as info:
        CafModel.load(path)
    assert "_Tripwire" in info.value.message
    assert _MARKER == []


def test_a_raw_pickle_model_is_never_unpickled(tmp_path, monkeypatch):
    """Even a pickle of a real CafModel is refused: the loader never calls pickle."""
    from cafclassify._errors import ModelError
    from cafclassify.model import CafModel

    path = tmp_path / "pickled.cafmodel"
    path.write_bytes(pickle.dumps(_Tripwire()))
    _MARKER.clear()
    pickle.loads(path.read_bytes())  # the payload is live ...
    assert _MARKER == ["unpickled"]

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle.load(s) was called")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    _MARKER.clear()
    with pytest.raises(ModelError, match="not a cafclassify model file"):
        CafModel.load(path)
    assert _MARKER == []


def _shell_commands() -> list[tuple[str, str]]:
    """(rule file, shell command) for every `shell:` directive of the workflow."""
    out = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"^\s+shell:\n((?:\s+\"[^\n]*\"\n)+)", text, flags=re.M):
            parts = re.findall(r"\"([^\n]*)\"", m.group(1))
            out.append((smk.name, "".join(parts)))
    return out


def test_workflow_shell_commands_quote_every_value():
    """Paths and names are {x:q}-quoted; option strings are built with shlex (cli_opts)."""
    commands = _shell_commands()
    assert len(commands) >= 8  # read, qc, gate, score, train, classify, report, summary, fetch
    allowed_unquoted = {"threads", "params.opts", "params.links"}
    for name, cmd in commands:
        for field in re.findall(r"\{([^{}]+)\}", cmd):
            assert field.endswith(":q") or field in allowed_unquoted, (name, field, cmd)
    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for m in re.finditer(r"^\s+opts=(.*)$", rules, flags=re.M):
        value = m.group(1)
        if "cli_opts(" in value:
            continue
        # a named helper (`opts=helper` or `opts=lambda wc: helper(wc)`): it must return
        # cli_opts, or step_opts (which returns cli_opts, checked as a helper too)
        helpers = [re.search(rf"^def {name}\(.*?(?=^\S)", rules + "\n.", flags=re.M | re.S)
                   for name in re.findall(r"[A-Za-z_]\w*", value) if name not in ("lambda", "wc")]
        helpers = [h.group(0) for h in helpers if h is not None]
        assert helpers and all(("return cli_opts(" in h) or ("return step_opts(" in h) for h in helpers), m.group(0)
    step = re.search(r"^def step_opts\(.*?(?=^\S)", rules + "\n.", flags=re.M | re.S)
    assert step is None or "return cli_opts(" in step.group(0)
    for m in re.finditer(r"^\s+links=(.*)$", rules, flags=re.M):
        assert "shlex.join(" in m.group(1), m.group(0)


def test_cli_opts_quotes_hostile_values():
    import shlex

    src = (REPO / "workflow" / "rules" / "common.smk").read_text()
    block = re.search(r"^def cli_opts\(.*?(?=^\S)", src, flags=re.M | re.S).group(0)
    ns: dict = {"shlex": shlex}
    exec(block, ns)
    cli_opts = ns["cli_opts"]
    hostile = "x; rm -rf ~ && $(whoami) `id` 'q' \"dq\" | tee /tmp/p\nnext"
    rendered = cli_opts(title=hostile, seed=3, smooth=True, sample_key=None, threshold="")
    assert shlex.split(rendered) == ["--title", hostile, "--seed", "3", "--smooth"]


def test_download_with_matching_checksum_over_allowed_http(tmp_path, server):
    from cafclassify.io import fetch

    dest = tmp_path / "ok" / "data.h5ad"
    want = hashlib.sha256(PAYLOAD).hexdigest()
    assert fetch(f"{server}/data.h5ad", dest, sha256=want, allow_http=True, retries=0) == dest
    assert dest.read_bytes() == PAYLOAD
    assert files_under(tmp_path / "ok") == [dest]  # no .part file left
