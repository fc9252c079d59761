"""Upload a saved Long-CLIP folder to the Hugging Face Hub after checking it loads.

    python conversion/push_to_hub.py DIR --repo-id OWNER/NAME [--private] [--revision BRANCH]
        [--commit-message MSG] [--token TOKEN]

Same as the installed `longclip-push-to-hub` console script; kept here so the conversion steps of a checkout sit
side by side.
"""

from modeling_longclip.hub import main

if __name__ == "__main__":
    main()
