"""RQ1's charts (altair), and the quickstart's: scores by critic and backbone, dose-response,
critic information against Score change, and effects at every rate of the grid. altair is
imported where a chart is drawn: importing it costs seconds."""
from __future__ import annotations

import pandas as pd


def bars(df, x: str, group: str, y: str = "acc", title: str | dict = "", y_title: str = "accuracy (%)"):
    """Grouped bars of `y` with 95% CI error bars (lo, hi): x, then one bar per group."""
    import altair as alt

    base = alt.Chart(df).encode(x=alt.X(f"{x}:N", title=x, sort=None), xOffset=alt.XOffset(f"{group}:N", sort=None))
    bars = base.mark_bar().encode(y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=True)),
                                  color=alt.Color(f"{group}:N", sort=None),
                                  tooltip=[x, group, y, "lo", "hi"])
    err = base.mark_errorbar(ticks=True, color="black").encode(y=alt.Y("lo:Q", title=y_title), y2="hi:Q")
    return (bars + err).properties(title=title, width=alt.Step(22), height=260)


def rq1_score_chart(table, metric: str = "Score"):
    """Grouped bar chart of `metric`: x critic, grouped by backbone, with 95% CI error bars; with
    several seeds, each bar and interval is the seed mean and a dot marks each seed."""
    import altair as alt

    df = pd.DataFrame({"critic": table["critic"], "backbone": table["backbone"], "acc": table[metric],
                       "lo": table[f"{metric} lo"], "hi": table[f"{metric} hi"]})
    mean = df.groupby(["critic", "backbone"], sort=False, as_index=False)[["acc", "lo", "hi"]].mean().round(1)
    seeds = len(df) > len(mean)
    title = f"{metric} by critic and backbone (95% CI{'; seed means, dots: seeds' if seeds else ''})"
    chart = bars(mean, "critic", "backbone", title=title, y_title=f"{metric} (%)")
    if seeds:
        dots = alt.Chart(df).mark_point(filled=True, color="black", size=18).encode(
            x=alt.X("critic:N", sort=None), xOffset=alt.XOffset("backbone:N", sort=None), y="acc:Q")
        chart = chart + dots
    return chart


def rq1_dose_chart(table, metric: str = "Score"):
    """Dose-response: `metric` against the simulated critic's accuracy p, No-Critiques as a rule."""
    import altair as alt

    sim = table[table["critic_p"].notna()]
    base = table[table["critic"].map(lambda c: c == "none")]
    line = alt.Chart(sim).encode(x=alt.X("critic_p:Q", title="simulated critic accuracy p", scale=alt.Scale(zero=False)),
                                 color="backbone:N")
    chart = line.mark_line(point=True).encode(y=alt.Y(f"{metric}:Q", title=f"{metric} (%)", scale=alt.Scale(zero=False))) + \
        line.mark_errorbar(ticks=True).encode(y=alt.Y(f"{metric} lo:Q", title=f"{metric} (%)"), y2=f"{metric} hi:Q")
    if len(base):
        chart = chart + alt.Chart(base).mark_rule(strokeDash=[4, 4]).encode(y=f"{metric}:Q", color="backbone:N")
    return chart.properties(title=f"{metric} vs critique quality (dashed: No-Critiques)", width=320, height=260)


def rq1_charts(table) -> dict:
    """{"rq1_score": grouped bars, "rq1_pandalm": the same for PandaLM when present,
    "rq1_dose_response": when simulated critics are present}."""
    charts = {"rq1_score": rq1_score_chart(table, "Score")}
    if "PandaLM" in table and table["PandaLM"].notna().any():
        charts["rq1_pandalm"] = rq1_score_chart(table, "PandaLM")
    if "critic_p" in table and table["critic_p"].notna().any() and table["Score"].notna().any():
        charts["rq1_dose_response"] = rq1_dose_chart(table)
    return charts


def information_chart(info):
    """x: critic information (probe accuracy, %), y: change in Score against No-Critiques; the
    simulated critics draw the curve, real critics are points with both intervals, and a hollow
    point marks what the curve predicts for each."""
    import altair as alt

    xt, yt = "critic information: critique-only probe accuracy (%)", "Score change vs No-Critiques (points)"
    x = alt.X("information:Q", title=xt, scale=alt.Scale(zero=False))
    y = alt.Y("Score change:Q", title=yt)
    sim, real = info[info["kind"] == "simulated"], info[info["kind"] == "real"]
    tips = ["critic", "information", "information lo", "information hi", "Score change", "lo", "hi"]
    curve = alt.Chart(sim).encode(x=x, y=y)
    layers = [curve.mark_line(color="gray") + curve.mark_point(color="gray", filled=True).encode(tooltip=tips),
              alt.Chart(sim).mark_errorbar(color="gray").encode(x=x, y=alt.Y("lo:Q", title=yt), y2="hi:Q"),
              alt.Chart(real).mark_point(filled=True, size=80).encode(x=x, y=y, color="critic:N", tooltip=tips),
              alt.Chart(real).mark_errorbar().encode(x=x, y=alt.Y("lo:Q", title=yt), y2="hi:Q", color="critic:N"),
              alt.Chart(real).mark_errorbar().encode(x=alt.X("information lo:Q", title=xt), x2="information hi:Q",
                                                     y=y, color="critic:N"),
              alt.Chart().mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.datum(0))]
    pred = real[real["predicted change"].notna()] if "predicted change" in real else real.iloc[:0]
    if len(pred):
        layers.append(alt.Chart(pred).mark_point(shape="diamond", size=90).encode(
            x=x, y=alt.Y("predicted change:Q", title=yt), color="critic:N"))
    lr = info["lr"].iloc[0] if len(info) else None
    return alt.layer(*layers).properties(
        title=f"Critic information vs Score change (lr {lr:g}; gray: simulated critics; diamonds: predicted)",
        width=380, height=280)


def effects_chart(effects, metric: str = "Score"):
    """Each critic's change against No-Critiques at every rate of the grid (95% hierarchical
    intervals over seeds and pairs): a conclusion that flips with the rate shows here."""
    import altair as alt

    df = effects[(effects["metric"] == metric) & (effects["rule"] == "fixed")]
    base = alt.Chart(df).encode(x=alt.X("lr:Q", title="learning rate (both arms)", scale=alt.Scale(type="log")),
                                color=alt.Color("critic:N", sort=None))
    chart = (base.mark_line(point=True).encode(y=alt.Y("change:Q", title=f"{metric} change vs No-Critiques (points)"),
                                               tooltip=["critic", "lr", "change", "lo", "hi", "p"])
             + base.mark_errorbar(ticks=True).encode(y=alt.Y("lo:Q", title=f"{metric} change vs No-Critiques (points)"),
                                                      y2="hi:Q")
             + alt.Chart().mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.datum(0)))
    chart = alt.layer(chart, data=df).properties(width=300, height=240)
    if df["backbone"].nunique() > 1:
        chart = chart.facet(column=alt.Column("backbone:N", sort=None))
    return chart.properties(title=f"{metric} change at every rate of the grid (95% CI over seeds and pairs)")
