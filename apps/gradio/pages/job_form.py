"""The new-job form's logic, apart from its widgets: the config the fields describe, the YAML view
they edit, the fields a stored config (a profile, an old job) fills back in, and what a profile keeps.

The YAML view is what gets submitted. Typing in a field changes only what that field spells in the
YAML, so a config copied from an old job or filled from a profile keeps its other fields (reward
params, LoRA alpha, resources) through later edits (`lay_form_over`).
"""

from __future__ import annotations

from typing import Any

import yaml

from deepext.train.profiles import apply_profile

FORM_FIELDS = ["name", "model", "dataset", "rewards", "steps", "learning_rate", "group_size", "prompts_per_step"]
FORM_FIELDS += ["max_new_tokens", "temperature", "kl_coef", "lora_rank", "batch_size"]
# The sections only one kind has: switching kind drops the other's.
ONLY_IN = {"grpo": ("rewards", "sampling", "optim", "algorithm", "schedule"), "sft": ("training",)}
FORM_DEFAULTS: dict[str, Any] = {
    "name": "",
    "model": "",
    "dataset": "",
    "rewards": "",
    "steps": 100,
    "learning_rate": 1e-5,
    "group_size": 8,
    "prompts_per_step": 16,
    "max_new_tokens": 128,
    "temperature": 1.0,
    "kl_coef": 0.0,
    "lora_rank": 0,
    "batch_size": 8,
}


def job_config(
    kind: str,
    *,
    name: str,
    model: str,
    dataset: str,
    rewards: str,
    steps: float,
    learning_rate: float,
    group_size: float,
    prompts_per_step: float,
    max_new_tokens: float,
    temperature: float,
    kl_coef: float,
    lora_rank: float,
    batch_size: float,
) -> dict[str, Any]:
    """The config the form describes (only the fields it sets; the server fills in the defaults). A
    sweep starts as the form's GRPO config with the learning rate searched around the form's value,
    six trials two at a time under ASHA - edit its YAML for other fields."""
    if kind == "sweep":
        rate = float(learning_rate) or 1e-5
        return {
            "kind": "grpo",
            "base": job_config(
                "grpo",
                name=name,
                model=model,
                dataset=dataset,
                rewards=rewards,
                steps=steps,
                learning_rate=learning_rate,
                group_size=group_size,
                prompts_per_step=prompts_per_step,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                kl_coef=kl_coef,
                lora_rank=lora_rank,
                batch_size=batch_size,
            ),
            "search_space": {"optim.learning_rate": {"loguniform": [rate / 10, rate * 10]}},
            "metric": "reward_mean",
            "mode": "max",
            "trials": 6,
            "concurrency": 2,
            "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        }
    model_settings: dict[str, Any] = {"path": model.strip()}
    if lora_rank and int(lora_rank) > 0:
        model_settings["lora"] = {"rank": int(lora_rank), "alpha": 2 * int(lora_rank)}
    config: dict[str, Any] = {
        "name": name.strip() or kind,
        "model": model_settings,
        "data": {"dataset": dataset.strip()},
    }
    if kind == "grpo":
        reward_list = []
        for item in rewards.split(","):
            if item.strip():
                reward_name, _, weight = item.strip().partition(":")
                reward: dict[str, Any] = {"name": reward_name.strip()}
                if weight.strip():
                    reward["weight"] = float(weight)
                reward_list.append(reward)
        config["rewards"] = reward_list
        config["sampling"] = {
            "group_size": int(group_size),
            "prompts_per_step": int(prompts_per_step),
            "max_new_tokens": int(max_new_tokens),
            "temperature": float(temperature),
        }
        config["optim"] = {"learning_rate": float(learning_rate)}
        config["algorithm"] = {"kl_coef": float(kl_coef)}
        config["schedule"] = {"steps": int(steps)}
    else:
        config["training"] = {
            "max_steps": int(steps),
            "learning_rate": float(learning_rate),
            "batch_size": int(batch_size),
        }
    return config


def parse_yaml(text: str | None) -> dict[str, Any]:
    """The YAML view as a config, or a ValueError saying what is wrong with it."""
    try:
        config = yaml.safe_load(text or "")
    except yaml.YAMLError as exc:
        raise ValueError(f"the YAML does not parse: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError("the YAML must be a mapping of config fields")
    return config


def form_values(config: dict[str, Any]) -> dict[str, Any]:
    """The form's fields as a stored GRPO, SFT or sweep config spells them (defaults where it is silent);
    the inverse of `job_config` for what the form can show."""
    if "search_space" in config:  # a sweep: the form shows its base
        return form_values(config.get("base") or {})
    model, data = config.get("model") or {}, config.get("data") or {}
    sampling, training = config.get("sampling") or {}, config.get("training") or {}
    rewards = ", ".join(
        r["name"] + (f":{r['weight']:g}" if r.get("weight", 1.0) != 1.0 else "")
        for r in config.get("rewards") or []
        if isinstance(r, dict) and "name" in r
    )
    lora = model.get("lora") or {}
    steps = (config.get("schedule") or {}).get("steps") or training.get("max_steps")
    rate = (config.get("optim") or {}).get("learning_rate") or training.get("learning_rate")
    found = {
        "name": config.get("name"),
        "model": model.get("path"),
        "dataset": data.get("dataset") or data.get("path"),
        "rewards": rewards,
        "steps": steps,
        "learning_rate": rate,
        "group_size": sampling.get("group_size"),
        "prompts_per_step": sampling.get("prompts_per_step"),
        "max_new_tokens": sampling.get("max_new_tokens"),
        "temperature": sampling.get("temperature"),
        "kl_coef": (config.get("algorithm") or {}).get("kl_coef"),
        "lora_rank": lora.get("rank", 0),
        "batch_size": training.get("batch_size"),
    }
    return {
        key: FORM_DEFAULTS[key] if value in (None, "") and key != "rewards" else value for key, value in found.items()
    }


def _same_rewards(stored: Any, spelled: Any) -> bool:
    """Whether the form's `name[:weight]` list says what the stored rewards say (params aside)."""
    if not isinstance(stored, list) or not isinstance(spelled, list) or len(stored) != len(spelled):
        return False
    return all(
        isinstance(a, dict)
        and a.get("name") == b["name"]
        and float(a.get("weight", 1.0)) == float(b.get("weight", 1.0))
        for a, b in zip(stored, spelled, strict=True)
    )


def lay_form_over(current: dict[str, Any], kind: str, form: dict[str, Any]) -> dict[str, Any]:
    """The YAML view's config after a field changed: the form's config laid over the current one,
    keeping what the form cannot spell when it says the same (reward params, LoRA settings), and
    dropping the sections the other kind has. A change between a sweep and a single job starts over."""
    if not current or ("search_space" in current) != (kind == "sweep"):
        return form
    if kind == "sweep":
        return {**current, "base": lay_form_over(current.get("base") or {}, current.get("kind", "grpo"), form["base"])}
    kept = {k: v for k, v in current.items() if k not in ONLY_IN["sft" if kind == "grpo" else "grpo"]}
    merged = apply_profile(kept, form)
    if _same_rewards(current.get("rewards"), form.get("rewards")):
        merged["rewards"] = current["rewards"]
    lora, spelled = (current.get("model") or {}).get("lora"), form["model"].get("lora")
    if spelled is None:
        merged["model"].pop("lora", None)  # rank 0: full fine-tuning
    elif isinstance(lora, dict) and lora.get("rank") == spelled["rank"]:
        merged["model"]["lora"] = lora
    return merged


def profile_settings(config: dict[str, Any]) -> dict[str, Any]:
    """What a profile keeps of a job config: its training settings, not what it trains (name, model
    path, dataset), nor what is left empty (no rewards typed is not a setting)."""
    settings = {k: v for k, v in config.items() if k not in ("name", "data")}
    model = {k: v for k, v in (settings.pop("model", None) or {}).items() if k != "path"}
    kept = {**settings, "model": model}
    return {k: v for k, v in kept.items() if v not in ([], {}, None, "")}


def to_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False) if config else ""
