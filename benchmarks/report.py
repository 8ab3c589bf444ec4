"""What every benchmark report records: the machine it ran on, and the JSON file it writes."""

import json
import os
import platform


def describe_cpu():
    """The CPU as `lscpu` names it: model name, family/model, the bfloat16-relevant flags, cores."""
    fields, flags = {}, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
        flags = set(fields.get("flags", "").split())
    except OSError:
        return f"{platform.machine()}, {os.cpu_count()} cores"
    fast = [flag for flag in ("avx512f", "avx512_bf16", "amx_bf16") if flag in flags] or ["no AVX-512"]
    return (f"{fields.get('model name', platform.machine())} (family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')}; {' '.join(fast)}), {os.cpu_count()} cores")


def cpu_flags():
    """The CPU's AVX-512 and AMX flags (what XNNPACK and oneDNN pick kernels by), sorted."""
    from tfcaption.training.precision import cpu_flags as all_cpu_flags

    return sorted(flag for flag in all_cpu_flags() or () if flag.startswith(("avx512", "amx")))


def machine():
    """{"cpu", "cpu_flags", "platform", "cpus", "tensorflow"}: the machine line of a report."""
    import tensorflow as tf

    return {"cpu": describe_cpu(), "cpu_flags": cpu_flags(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "tensorflow": tf.__version__}


def write_report(path, report):
    """Writes `report` as indented JSON to `path` (its folder created) and says so."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {path}")
