#!/usr/bin/env bash
# Each individual task adapter on its own task (the paper's "Individual" row): the adapter of
# task T is the sub-folder of ADAPTERS_DIR named like T (ScienceQA, ImageNet, VQAv2, Grounding or
# REC, OCRVQA, VizWiz-caption or VizWiz, Flickr30k or flickr30k-caption, IconQA; any case).
# Results in $RESULTS/${RUN_NAME:-individual}/<task>/.
#   scripts/eval_merge/Eval_direct.sh --adapters-dir TASK_ADAPTERS --model-base BASE --data-root DATA
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_main seen "$(basename "$0")" "$@"
