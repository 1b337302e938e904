"""A random-weight copy of the embedded model, made where it is used (the kit carries no weights):

    python3 benchmarks/gpu/random_model.py CONFIG_DIR OUT_DIR

CONFIG_DIR holds the embedded SmolLM2-135M's config and tokenizer (the kit's ``model/``); OUT_DIR
gets them and a bf16 ``model.safetensors`` initialised by transformers (normal, std 0.02; norms 1)
from seed 0, so every run, machine and engine loads the same weights. Why not vLLM's
``load_format="dummy"``: it sets every weight, norms included, uniform in +-1e-3, and the model
then repeats one or two tokens whatever it is fed, so the tests that need methods to differ, or
a new token to appear, fail for that reason alone (seen in the CPU dry run); a random network
with transformers' initialisation does not.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(source: str, dest: str) -> int:
    import torch
    import transformers

    out = Path(dest)
    if (out / "model.safetensors").is_file():
        print(f"random model: {out} (already made)")
        return 0
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    config = transformers.AutoConfig.from_pretrained(tmp)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.to(torch.bfloat16).save_pretrained(tmp)
    tmp.rename(out)
    print(f"random model: {out} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
