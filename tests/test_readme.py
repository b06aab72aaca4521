"""The README's quickstart is code a user copies: it must run as written and train."""

import re
from pathlib import Path

import jax

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstart_runs_and_lowers_the_loss():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python block"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    params, state = namespace["params"], namespace["state"]
    step, task = namespace["step"], namespace["task"]
    key = jax.random.key(2)
    batch = task.sample_batch(key, "valid")
    first = float(task.loss(params, batch))
    for k in jax.random.split(key, 60):
        params, state, _ = step(params, state, k)
    assert float(task.loss(params, batch)) < 0.8 * first
