"""Upload a saved Long-CLIP folder to the Hugging Face Hub after checking it loads.

    python conversion/push_to_hub.py DIR --repo-id OWNER/NAME [--private] [--revision BRANCH]
        [--commit-message MSG] [--token TOKEN] [--include-training-state]

A training `checkpoint-*` folder uploads as a model: its optimizer, scheduler, RNG and Trainer state (and DeepSpeed's
`global_step*/` shards) stay home unless `--include-training-state` is given.

Same as the installed `longclip-push-to-hub` console script; kept here so the conversion steps of a checkout sit
side by side.
"""

from modeling_longclip.export.hub import main

if __name__ == "__main__":
    main()
