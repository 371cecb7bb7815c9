"""Open the HTML reports in headless Chromium and check what a user would see.

Chromium is driven over the DevTools protocol on ``--remote-debugging-pipe``
(file descriptors 3 and 4, NUL-separated JSON), so the test needs nothing beyond
the standard library and the ``chromium`` binary. It fails on any console error,
any uncaught exception, any request that is not the report itself or a ``data:``
URI (the page must be self-contained), and any ``<img>`` that did not decode; it
saves a full-page screenshot and checks that the numbers shown on the page equal
those in the ``.h5ad``.

Set ``CAFCLASSIFY_SCREENSHOT_DIR`` to keep the screenshots (e.g. as CI artefacts).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from cafclassify import _keys as K
from cafclassify.report import write_report, write_summary

from _report_fixtures import make_annotated

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"{CHROMIUM} not installed (apt-get install -y --no-install-recommends chromium)",
    ),
]

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
]


def _high_fd(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Chromium:
    """Minimal DevTools-protocol client over ``--remote-debugging-pipe`` (stdlib only)."""

    def __init__(self, user_data_dir: Path, *, timeout: float = 60.0) -> None:
        self.timeout = timeout
        # move the pipe ends above fd 9 so that dup2 onto 3 and 4 in the child never
        # collides with them (dup2(fd, fd) would keep close-on-exec)
        cmd_r, self._cmd_w, self._res_r, res_w = (_high_fd(fd) for fd in (*os.pipe(), *os.pipe()))

        def child_fds() -> None:  # in the child: our pipe ends become fds 3 (in) and 4 (out)
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)

        # os.pipe() fds are close-on-exec; the dup2 copies on 3 and 4 are inherited
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe",
             "about:blank"],
            preexec_fn=child_fds, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    # -- transport -----------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self._res_r], [], [], left)
            if ready:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                    raise RuntimeError(f"Chromium closed the pipe. stderr tail:\n{err}")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, *, session: bool = True) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            m = self._read_message(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    # -- page ------------------------------------------------------------------
    def open(self, url: str, *, width: int = 1300, height: int = 900) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"evaluation failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, path: Path, *, max_height: int = 16000) -> Path:
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height),
                "scale": 1}
        data = self.send("Page.captureScreenshot",
                         {"format": "png", "captureBeyondViewport": True, "clip": clip})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self, allowed_url: str) -> list[str]:
        """Console errors, uncaught exceptions and non-self-contained requests seen so far."""
        out = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log error: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif method == "Network.requestWillBeSent":
                url = p.get("request", {}).get("url", "")
                if url != allowed_url and not url.startswith("data:"):
                    out.append(f"request outside the report: {url}")
        return out

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.stderr:
            self.proc.stderr.close()


PAGE_STATE = r"""
(() => {
  const visible = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  // the first number shown in an element ("1,234 (5.6%)" -> 1234)
  const num = el => Number((el.textContent.replace(/,/g, '').match(/-?[0-9.]+/) || [NaN])[0]);
  const imgs = [...document.images].map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight,
                                                complete: i.complete, visible: visible(i)}));
  const keys = {};
  document.querySelectorAll('[data-key]').forEach(el => {
    if (!(el.dataset.key in keys)) keys[el.dataset.key] = {text: el.textContent.trim(),
                                                           visible: visible(el)}; });
  const table = (sel, attr) => { const o = {};
    document.querySelectorAll(sel + ' [data-' + attr + ']').forEach(el => {
      o[el.getAttribute('data-' + attr)] = num(el); }); return o; };
  const rows = [...document.querySelectorAll('#proportions-table tr[data-dataset]')].map(tr => ({
      dataset: tr.dataset.dataset, sample: tr.dataset.sample,
      counts: Object.fromEntries([...tr.querySelectorAll('[data-subtype-count]')].map(
        td => [td.dataset.subtypeCount, num(td)]))}));
  const datasets = [...document.querySelectorAll('#datasets-table tr[data-dataset]')].map(tr => ({
      name: tr.dataset.dataset,
      n_cells: num(tr.querySelector('[data-key=n_cells]')),
      n_fibroblasts: num(tr.querySelector('[data-key=n_fibroblasts]')),
      link: (tr.querySelector('a') || {}).href || null}));
  return {title: document.title, imgs, keys,
          subtypes: table('#subtype-counts', 'subtype-count'),
          lineages: table('#lineage-counts', 'lineage-count'),
          flags: table('#state-flags', 'flag-count'),
          notRun: document.querySelectorAll('[data-status=not-run]').length,
          errors: document.querySelectorAll('#report-errors li').length,
          warnings: [...document.querySelectorAll('[data-warning]')].map(li => li.dataset.warning),
          scripts: document.scripts.length,
          rows, datasets, width: document.documentElement.scrollWidth};
})()
"""


def _inspect(html: Path, tmp_path: Path, name: str) -> dict:
    url = html.resolve().as_uri()
    browser = Chromium(tmp_path / f"profile-{name}")
    try:
        browser.open(url)
        state = browser.evaluate(PAGE_STATE)
        shot = browser.screenshot(tmp_path / f"{name}.png")
        problems = browser.problems(url)
    finally:
        browser.close()
    keep = os.environ.get("CAFCLASSIFY_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    assert shot.stat().st_size > 10_000, "screenshot is (nearly) empty"
    state["problems"] = problems
    return state


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    d = tmp_path_factory.mktemp("reports")
    paths = {}
    for name, kw in {"tumour_a": {"n_cells": 1200, "random_state": 0, "n_samples": 2},
                     "tumour_b": {"n_cells": 700, "random_state": 3, "n_samples": 1}}.items():
        h5 = d / f"{name}.h5ad"
        make_annotated(**kw).write_h5ad(h5)
        paths[name] = (h5, write_report(h5, d / f"{name}.html", max_cells_plot=1000))
    summary = write_summary([h for h, _ in paths.values()], d / "summary.html",
                            report_links={k: r for k, (_, r) in paths.items()})
    return paths, summary


def test_report_renders_and_shows_the_h5ad_numbers(pages, tmp_path):
    paths, _ = pages
    h5, html = paths["tumour_a"]
    state = _inspect(html, tmp_path, "report_tumour_a")
    assert state["problems"] == []
    assert state["scripts"] == 0
    # every figure decoded and is on screen; the report has all its figures
    assert len(state["imgs"]) >= 10, state["imgs"]
    bad = [i for i in state["imgs"] if not (i["complete"] and i["w"] > 0 and i["visible"])]
    assert bad == []
    assert state["errors"] == 0 and state["notRun"] == 0
    # nothing overflows the viewport horizontally
    assert state["width"] <= 1300
    adata = ad.read_h5ad(h5)
    keys = state["keys"]
    assert int(keys["n_cells"]["text"].replace(",", "")) == adata.n_obs
    assert keys["n_cells"]["visible"] and keys["n_fibroblasts"]["visible"]
    n_fib = int((adata.obs[K.OBS_LINEAGE] == "fibroblast").sum())
    assert int(keys["n_fibroblasts"]["text"].replace(",", "")) == n_fib
    expected = adata.obs[K.OBS_SUBTYPE].value_counts().to_dict()
    assert state["subtypes"] == {str(k): int(v) for k, v in expected.items()}
    assert state["lineages"] == {str(k): int(v) for k, v in adata.obs[K.OBS_LINEAGE].value_counts().items() if v}
    fib = (adata.obs[K.OBS_LINEAGE] == "fibroblast").to_numpy()
    assert state["flags"]["LTBP2+"] == int(adata.obs[K.OBS_LTBP2].to_numpy()[fib].sum())
    # planted: dCAF has no cells -> the warnings box says so
    assert "subtype_absent" in state["warnings"]


def test_summary_renders_links_and_counts(pages, tmp_path):
    paths, summary = pages
    state = _inspect(summary, tmp_path, "summary")
    assert state["problems"] == []
    assert len(state["imgs"]) == 1 and state["imgs"][0]["w"] > 0
    by_name = {d["name"]: d for d in state["datasets"]}
    assert set(by_name) == set(paths)
    for name, (h5, html) in paths.items():
        adata = ad.read_h5ad(h5)
        assert by_name[name]["n_cells"] == adata.n_obs
        assert by_name[name]["n_fibroblasts"] == int((adata.obs[K.OBS_LINEAGE] == "fibroblast").sum())
        assert by_name[name]["link"] == html.resolve().as_uri()
        for row in (r for r in state["rows"] if r["dataset"] == name):
            m = (adata.obs["sample"].astype(str) == row["sample"]).to_numpy()
            got = row["counts"]
            for subtype, n in got.items():
                assert n == int(np.sum(m & (adata.obs[K.OBS_SUBTYPE].astype(str) == subtype).to_numpy()))
    assert {r["dataset"] for r in state["rows"]} == set(paths)
