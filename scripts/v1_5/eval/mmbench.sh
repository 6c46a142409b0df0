#!/usr/bin/env bash
# MMBench (LLaVA-1.5 protocol): generate answers and score them into $RESULTS/$RUN_NAME/MMBench/.
#   scripts/v1_5/eval/mmbench.sh --model-path MODEL [--model-base BASE] --data-root DATA [--run-name NAME]
# Data under DATA_ROOT/eval/ (see llava/eval/pipeline.py); settings: flags or the env file
# (scripts/eval_merge/common.sh, scripts/eval_merge/env.example).
source "$(dirname "${BASH_SOURCE[0]}")/../../eval_merge/common.sh"
eval_main "MMBench" "$(basename "$0")" "$@"
