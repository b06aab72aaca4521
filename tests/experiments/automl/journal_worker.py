"""One worker of the journal-storage test: runs trials of a shared study, logs its trial numbers.

    python journal_worker.py WORKDIR OUT_FILE
"""

import json
import sys
import time

from experiments.automl import study as st
from experiments.automl.space import Float, SearchSpace

if __name__ == "__main__":
    workdir, out_file = sys.argv[1], sys.argv[2]
    space = SearchSpace({"x": Float(-1.0, 1.0)})
    mine = []

    def objective(params, report):
        time.sleep(0.1)  # long enough that the two workers interleave
        return params["x"] ** 2

    def counted(params, report):
        value = objective(params, report)
        mine.append(params["x"])
        return value

    result = st.run_study(counted, space, sampler="random", budget=st.Budget(12),
                          storage=st.storage_for(workdir, "journal"), study_name="shared",
                          seed=int(out_file[-6]), progress=False)
    numbers = [t.number for t in result.trials if t.params.get("x") in mine]
    with open(out_file, "w") as f:
        json.dump({"mine": numbers, "total": len(result.trials)}, f)
