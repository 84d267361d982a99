"""A plain PyTorch fine-tuning script, run as a tracked deepext job.

The lines marked `# deepext` are all that changed from the script someone would write anyway: the
job's context supplies the model folder, the dataset version's rows, the config and the output
folder, takes the metrics, and registers the saved model as a model version with its lineage.

    deepext jobs submit custom --script examples/custom_training/train.py \\
        --config examples/custom_training/job.yaml --name my-custom-model --wait

Run outside the platform (`python train.py`), the same script trains with a local stand-in
context that prints the metrics instead.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from deepext.train import context  # deepext

ctx = context.current()  # deepext
params = ctx.config  # deepext: the job's `params`
steps, lr, batch_size = int(params.get("steps", 20)), float(params.get("lr", 1e-3)), int(params.get("batch_size", 8))

torch.manual_seed(int(params.get("seed", 0)))
tokenizer = AutoTokenizer.from_pretrained(ctx.model_path)  # deepext: the resolved `model`
model = AutoModelForCausalLM.from_pretrained(ctx.model_path)
rows = ctx.dataset_rows()  # deepext: the rows of the job's `dataset` version
answer = params.get("completion_field", "completion")
texts = [f"{row['prompt']} {row[answer]}{tokenizer.eos_token or ''}" for row in rows]

optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
model.train()
for step in range(1, steps + 1):
    batch = [texts[(step * batch_size + i) % len(texts)] for i in range(batch_size)]
    encoded = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=128)
    labels = encoded.input_ids.masked_fill(encoded.attention_mask == 0, -100)
    loss = model(**encoded, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    ctx.report(step, loss=float(loss))  # deepext

model.save_pretrained(ctx.output_dir / "model")
tokenizer.save_pretrained(ctx.output_dir / "model")
ctx.save_model(ctx.output_dir / "model")  # deepext
