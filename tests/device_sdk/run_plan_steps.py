"""Run training steps of a plan in a separate interpreter process, for cross-runtime tests.

Usage: python run_plan_steps.py PLAN.tflite INPUT.npz OUTPUT.npz [--block-tensorflow]

INPUT holds ``weights``, ``x``, ``y`` (a stack of batches) and ``hparams``; OUTPUT gets the
per-step ``losses``, the final ``weights``, the ``runtime`` used and the ``modules`` imported.
"""

import sys
from importlib.abc import MetaPathFinder


class BlockTensorFlow(MetaPathFinder):
    """Make ``import tensorflow`` (and keras) fail as on a device where it is not installed."""

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in {"tensorflow", "keras", "tf_keras"}:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by the test)")
        return None


def main(argv):
    if "--block-tensorflow" in argv:
        sys.meta_path.insert(0, BlockTensorFlow())
    from pathlib import Path

    import numpy as np

    from device_sdk import PlanRunner

    plan, inputs, output = (Path(a) for a in argv[1:4])
    data = np.load(inputs)
    runner = PlanRunner.from_files(plan)
    runner.set_weights(data["weights"])
    runner.set_anchor(data["weights"])
    lr, momentum, mu = (float(v) for v in data["hparams"])
    runner.set_hparams(learning_rate=lr, momentum=momentum, mu=mu)
    losses = [runner.train_step(x, y) for x, y in zip(data["x"], data["y"], strict=True)]
    np.savez(
        output,
        losses=np.array(losses),
        weights=runner.get_weights(),
        runtime=runner.runtime,
        modules=np.array(sorted(m for m in sys.modules if "." not in m)),
    )


if __name__ == "__main__":
    main(sys.argv)
