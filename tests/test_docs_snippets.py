"""Every snippet of docs/writing-a-plugin.md runs as written.

The convention (stated at the top of the page):

- ``python`` blocks run in page order in one namespace, in an empty working directory, as if
  pasted into one Python session, with examples/third-party-plugin on ``sys.path``;
- a ``toml`` block with a ``[run]`` table is a pipeline: it is parsed with ``parse_pipeline``
  against the ``host`` the blocks above it left in the namespace, and a first line
  ``# file: NAME`` saves it as NAME in the working directory for the blocks below;
- a first line ``# excerpt: PATH`` means every key the block shows must equal that file's;
- a ``python`` block whose first line is ``# file: test_*.py`` is a test file, run by pytest;
- a first line ``# not run: REASON`` (a shell session...) skips the block; python ones still compile.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import tomli

from deepscope.config import parse_pipeline
from deepscope.testing import fresh_store

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "writing-a-plugin.md"
EXAMPLE = ROOT / "examples" / "third-party-plugin"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


class Block(NamedTuple):
    lang: str
    source: str
    line: int  # of the block's first line of code in the page

    @property
    def first(self) -> str:
        return self.source.split("\n", 1)[0].strip()

    def marker(self, name: str) -> str | None:
        prefix = f"# {name}:"
        return self.first[len(prefix):].strip() if self.first.startswith(prefix) else None

    def code(self) -> Any:
        """Compiled so that tracebacks point at the page's own line numbers."""
        return compile("\n" * (self.line - 1) + self.source, str(PAGE), "exec")


def page_blocks() -> list[Block]:
    text = PAGE.read_text(encoding="utf-8")
    return [Block(m.group(1), m.group(2), text.count("\n", 0, m.start(2)) + 1) for m in FENCE.finditer(text)]


def is_test_file(block: Block) -> bool:
    return block.lang == "python" and (block.marker("file") or "").startswith("test_")


class PageRun(NamedTuple):
    namespace: dict
    pipelines: dict  # "# file:" name (or "<line N>") -> the Pipeline parsed where the block stands
    executed: list  # lines of the python blocks run


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> PageRun:
    """Run the page top to bottom, once, the way a reader would."""
    workdir = tmp_path_factory.mktemp("page")
    namespace: dict = {"__name__": "docs_page"}
    pipelines: dict = {}
    executed: list = []
    previous = os.getcwd()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", fresh_store(workdir / "default-store"))  # nothing lands in ./mlflow.db
        mp.syspath_prepend(str(EXAMPLE))
        os.chdir(workdir)
        try:
            for block in page_blocks():
                where = f"{PAGE.name}:{block.line}"
                if block.marker("not run") is not None or is_test_file(block):
                    continue
                if block.lang == "python":
                    try:
                        exec(block.code(), namespace)
                    except Exception as exc:
                        raise AssertionError(f"{where}: the python block raised {type(exc).__name__}: {exc}") from exc
                    executed.append(block.line)
                elif block.lang == "toml" and "[run]" in block.source:
                    assert "host" in namespace, f"{where}: a pipeline before any block built a host"
                    name = block.marker("file") or f"<line {block.line}>"
                    pipelines[name] = parse_pipeline(block.source, namespace["host"].registry, file=where)
                    if block.marker("file"):
                        (workdir / name).write_text(block.source, encoding="utf-8")
        finally:
            os.chdir(previous)
    return PageRun(namespace, pipelines, executed)


# --------------------------------------------------------------------------- the page's shape


def test_every_block_is_run_checked_or_skipped_for_a_stated_reason():
    blocks = page_blocks()
    assert len(blocks) >= 25
    for block in blocks:
        where = f"{PAGE.name}:{block.line}"
        assert block.lang in ("python", "toml", "bash"), f"{where}: unexpected block language {block.lang}"
        reason = block.marker("not run")
        if reason is not None:
            assert len(reason) > 5, f"{where}: '# not run:' needs a reason"
        if block.lang == "python":
            block.code()  # at least it compiles
        elif block.lang == "toml":
            tomli.loads(block.source)
        else:
            assert reason is not None, f"{where}: a {block.lang} block must say why it is not run"


def test_one_worked_example_per_kind():
    text = PAGE.read_text(encoding="utf-8")
    section = text[text.index("## 6. Worked examples"):text.index("## 7.")]
    for title in ("A dataset", "A model", "A trainer", "A probe", "A pruner", "An attack with setup",
                  "A distiller", "A new component kind and a new stage kind", "A task-aware model"):
        assert re.search(rf"^### 6\.\d+ {title}", section, re.M), title


def test_the_pyproject_excerpt_matches_the_example_plugin():
    (block,) = [b for b in page_blocks() if b.marker("excerpt")]
    path = ROOT / block.marker("excerpt")
    shown, real = tomli.loads(block.source), tomli.loads(path.read_text(encoding="utf-8"))

    def check(part: dict, whole: dict, where: str) -> None:
        for key, value in part.items():
            assert key in whole, f"{path}: the page shows {where}{key}, which the file lacks"
            if isinstance(value, dict):
                check(value, whole[key], f"{where}{key}.")
            else:
                assert whole[key] == value, f"{path}: {where}{key} is {whole[key]!r}, the page says {value!r}"

    check(shown, real, "")
    assert shown["project"]["entry-points"]["deepscope"]  # the part the section is about


# --------------------------------------------------------------------------- running it


def test_every_python_block_runs_and_every_pipeline_parses(page):
    python = [b.line for b in page_blocks() if b.lang == "python" and b.marker("not run") is None
              and not is_test_file(b)]
    assert page.executed == python
    assert set(page.pipelines) >= {"train.toml", "probe.toml", "prune.toml", "attack.toml", "distill.toml",
                                   "fit.toml"}


def test_the_distilled_set_is_what_the_later_train_stage_trains_on(page):
    import torch

    result = page.namespace["distilled"]
    stages = page.pipelines["distill.toml"].stages
    assert [(s.do, s.data) for s in stages] == [("distill", "real"), ("train", "synthetic/means"), ("probe", "real")]
    m = result.metrics
    assert m["train/on-means/examples"] == 3  # every epoch saw the three distilled images, not the 96 real ones
    assert m["probe/accuracy/acc"] > 0.9
    # oracle: gradient steps on E||image[y] - x||^2 pull each image to its class's mean training image
    ns = page.namespace
    x, y = ns["make_blobs"](ns["BlobsConfig"]()).train.tensors
    means = torch.stack([x[y == c].mean(0) for c in range(3)])
    images = result.state.synthetic_sets["synthetic/means"].x
    distance = torch.cdist(images.flatten(1), means.flatten(1))
    assert torch.equal(distance.argmin(1), torch.arange(3))
    assert float(distance.diagonal().max()) < 0.5 * float(torch.cdist(means.flatten(1), means.flatten(1)).max())


def test_the_plugin_added_stage_kind_ran_on_real_and_distilled_data(page):
    result = page.namespace["fitted"]
    assert [s.do for s in page.pipelines["fit.toml"].stages] == ["fit", "distill", "fit"]
    ns = page.namespace
    real_x = ns["make_blobs"](ns["BlobsConfig"]()).train.tensors[0]
    assert result.metrics["fit/pixel-mean/n"] == len(real_x) == 96
    assert result.metrics["fit/pixel-mean/mean"] == pytest.approx(float(real_x.double().mean()), abs=1e-6)
    distilled = result.state.synthetic_sets["synthetic/means"].x
    assert result.metrics["fit/on-means/n"] == 3
    assert result.metrics["fit/on-means/mean"] == pytest.approx(float(distilled.double().mean()), abs=1e-6)


def test_resume_continued_the_killed_run(page):
    straight, resumed = page.namespace["straight"], page.namespace["resumed"]
    assert resumed.status == "FINISHED" and resumed.run_id == page.namespace["stopper"].run_id
    for a, b in zip(straight.state.model.state_dict().values(), resumed.state.model.state_dict().values()):
        assert (a == b).all()


def test_the_task_aware_example_logs_per_task_metrics(page):
    m = page.namespace["tasks"].metrics
    assert {k for k in m if k.startswith("probe/")} == {"probe/task-accuracy/task_0/acc",
                                                        "probe/task-accuracy/task_1/acc"}
    assert "train/task-by-task/task_1/loss" in m
    assert page.namespace["tasks"].state.model.body.task == 1  # the probe restored the trainer's last task


def test_the_testing_section_is_a_passing_test_file(pytester):
    (block,) = [b for b in page_blocks() if is_test_file(b)]
    name = block.marker("file")
    pytester.makepyfile(**{name[:-3]: block.source})
    pytester.syspathinsert(EXAMPLE)
    result = pytester.runpytest_inprocess("-p", "deepscope.testing", "-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
