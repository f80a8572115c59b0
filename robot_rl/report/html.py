"""report.html: one self-contained page (inline CSS, no JavaScript, images referenced relatively from
report/) that opens straight from disk or from a copied run directory."""
from __future__ import annotations

import html
import os
from pathlib import Path

CSS = """
body { font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { padding: 0.3em 0.8em; border: 1px solid #ddd; }
th { background: #f4f4f4; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; } .missing { color: #a33; font-style: italic; }
.explain { color: #555; margin: 0.3em 0 0.6em; } .ok { color: #2a7d3b; } .bad { color: #b3261e; font-weight: bold; }
"""
NOT_RECORDED = "not recorded"


def _e(value) -> str:
    return html.escape(str(value))


def _pct(rate) -> str:
    return NOT_RECORDED if rate is None else f"{100 * rate:.1f} %"


def _ci(ci) -> str:
    return "" if not ci else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f} %"


def _num(value, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return NOT_RECORDED
    text = f"{value:,}" if isinstance(value, int) else f"{value:,.{digits}f}"
    return f"{text}{unit}"


def _row(cells: list[str], header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}{'' if header or i == 0 else ' class=n'}>{c}</{tag}>"
                            for i, c in enumerate(cells)) + "</tr>"


def _headline(s: dict) -> str:
    session = s["session"]
    rows = [_row(["", "success", "95 % CI (Wilson)", "episodes"], header=True)]
    for label, block in (("base policy (eval)", s["base"]), ("fine-tuned (eval)", s["final"])):
        rows.append(_row([label, _pct(block["success_rate"]), _ci(block["ci95"]), _num(block["episodes"])] if block
                         else [label, NOT_RECORDED, "", ""]))
    if s.get("paired"):
        pr = s["paired"]
        rows.append(_row(["same layouts (paired)", f"+{pr['gained']} / &minus;{pr['lost']}",
                          f"McNemar p = {pr['mcnemar_p']:.2g}", _num(pr["episodes"])]))
    rows.append(_row(["session rollouts (exploring)", _pct(session["success_rate"]), _ci(session["ci95"]),
                      _num(session["episodes"])]))
    rows.append(_row([f"session, last {session['last20_episodes']}", _pct(session["success_rate_last20"]),
                      _ci(session["ci95_last20"]), _num(session["last20_episodes"])]))
    return "<table>" + "".join(rows) + "</table>"


def _facts(s: dict) -> str:
    session, weights, clips = s["session"], s["weights"] or {}, s["safety_clips"]
    lat = s["latency_ms"]
    check = s["store_check"]
    if not check["recorded"]:
        verdict = f"{NOT_RECORDED} ({_e(check['reason'])})"
    elif check["match"]:
        verdict = (f"<span class=ok>labels match</span>: {check['checked_episodes']} rollouts, "
                   f"store success {_pct(check['store_success_rate'])}")
    else:
        verdict = f"<span class=bad>{len(check['mismatches'])} mismatch(es)</span>: " + "; ".join(
            _e(m["problem"]) for m in check["mismatches"][:5])
    facts = [
        ("improvement (final − base)",
         NOT_RECORDED if s["improvement"] is None else f"{100 * s['improvement']:+.1f} points"),
        ("environment steps", _num(session["env_steps"])),
        ("wall time", _num(session["wall_time_s"], " s")),
        ("episodes (aborted)", f"{session['episodes']} ({session['aborted']})"),
        ("weight version published / active", f"{_num(weights.get('learner_published_version'))} / "
                                              f"{_num(weights.get('policy_active_version'))}"),
        ("human interventions (steps)",
         NOT_RECORDED if s["interventions"] is None else _num(s["interventions"]["total"])),
        ("safety clips", NOT_RECORDED if clips is None else _num(clips["total"])),
        ("control tick p50 / p99", NOT_RECORDED if lat["tick"] is None
         else f"{lat['tick']['p50']:.2f} / {lat['tick']['p99']:.2f} ms"),
        ("inference p50 / p99", NOT_RECORDED if lat["inference"] is None
         else f"{lat['inference']['p50']:.2f} / {lat['inference']['p99']:.2f} ms"),
        ("store cross-check", verdict),
    ]
    return "<table>" + "".join(_row([_e(k), v]) for k, v in facts) + "</table>"


def _stages(stages: dict | None) -> str:
    if not stages:
        return f"<p class=missing>{NOT_RECORDED} (no stages in run.json)</p>"
    rows = [_row(["stage", "duration"], header=True)]
    rows += [_row([_e(name), _num(sec, " s")]) for name, sec in stages.items()]
    return "<table>" + "".join(rows) + "</table>"


def _section(sec: dict) -> str:
    parts = [f"<h2 id={_e(sec['name'])}>{_e(sec['title'])}</h2>", f"<p class=explain>{_e(sec['explanation'])}</p>"]
    if sec["file"]:
        parts.append(f'<img src="{_e(sec["file"])}" alt="{_e(sec["title"])}">')
    else:
        parts.append(f"<p class=missing>{NOT_RECORDED}: {_e(sec['missing'])}</p>")
    return "\n".join(parts)


def write_html(run_dir: Path, summary: dict, sections: list[dict]) -> Path:
    title = f"Fine-tuning report: {Path(summary['run_dir']).name}"
    meta = [f"run directory <code>{_e(summary['run_dir'])}</code>", f"generated {_e(summary['generated'])}"]
    for key in ("profile", "base_checkpoint", "drift"):
        if summary.get(key) and summary.get(key) != "none":
            meta.append(f"{key.replace('_', ' ')} <code>{_e(summary[key])}</code>")
    body = [f"<h1>{_e(title)}</h1>", f"<p>{' · '.join(meta)}</p>", "<h2 id=headline>Headline</h2>",
            _headline(summary), _facts(summary), "<h2 id=stages>Stages</h2>", _stages(summary["stages_s"]),
            *(_section(s) for s in sections),
            "<p class=explain>All numbers are also in <a href=\"summary.json\">summary.json</a>.</p>"]
    page = (f"<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n<title>{_e(title)}</title>\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")
    path = run_dir / "report.html"
    tmp = path.with_name(".report.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
