/*
 * Portcullis dashboard: polls dashboard/data every second, turns the counters into rates here, draws them with
 * uPlot and keeps the last 5 minutes. Every string that comes from the config or from clients (names, SNI, errors)
 * reaches the page through textContent, never as HTML.
 */
;(() => {
  const POLL_MS = 1000
  /** Points kept per series: 5 minutes at one a second. */
  const WINDOW = 300
  const PALETTE = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf", "#ff7b72", "#e3b341", "#8b949e"]
  const COLOR = { ok: "#3fb950", warn: "#d29922", bad: "#f85149", info: "#58a6ff", muted: "#8593a3", line: "#2a3440" }
  const EXPIRY_DAYS_SHOWN = 90
  /** Handshake failures listed (GET /tls/failures has the last 100). */
  const RECENT_SHOWN = 10

  /** Aligned columns: t (Unix seconds) and one array per series key, all WINDOW long at most. */
  const history = { t: [], cols: new Map() }
  /** The raw counter totals of recent polls, for "last minute" and "last 5 minutes" figures. */
  const samples = []
  const charts = new Map()
  let previous
  let polls = 0
  let lastOk = 0

  // ---- small DOM helpers: text only ----

  function el(tag, className, text) {
    const node = document.createElement(tag)
    if (className) node.className = className
    if (text !== undefined && text !== null) node.textContent = String(text)
    return node
  }

  function byId(id) {
    return document.getElementById(id)
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild)
  }

  function setText(id, text, tone) {
    const node = byId(id)
    node.textContent = text
    node.classList.remove("ok", "warn", "bad")
    if (tone) node.classList.add(tone)
  }

  function empty(container, text) {
    clear(container)
    container.appendChild(el("div", "empty", text))
  }

  function row(cells) {
    const tr = el("tr")
    for (const c of cells) {
      const td = el("td", c.cls, c.text)
      if (c.title) td.title = c.title
      if (c.span) td.colSpan = c.span
      tr.appendChild(td)
    }
    return tr
  }

  // ---- numbers ----

  function fmtRate(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–"
    if (v >= 100) return v.toFixed(0)
    if (v >= 10) return v.toFixed(1)
    return v.toFixed(2)
  }

  function fmtCount(v) {
    return Math.round(v).toLocaleString("en-US")
  }

  function fmtMs(v) {
    if (v === null || v === undefined) return "–"
    return v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`
  }

  function pct(part, whole) {
    return whole > 0 ? (100 * part) / whole : 0
  }

  function sumValues(o) {
    let s = 0
    for (const k in o) s += o[k]
    return s
  }

  /** delta of a counter between two totals; null when it went down (a restart reset it). */
  function delta(now, before) {
    const d = (now || 0) - (before || 0)
    return d >= 0 ? d : null
  }

  /** quantile of a histogram's growth between two cumulative bucket lists (Prometheus' histogram_quantile). */
  function quantile(q, bounds, now, before) {
    if (!now) return null
    const counts = now.counts.map((c, i) => c - (before ? before.counts[i] || 0 : 0))
    const total = counts[counts.length - 1]
    if (!(total > 0)) return null
    const rank = q * total
    for (let i = 0; i < counts.length; i++) {
      if (counts[i] >= rank) {
        if (i >= bounds.length) return bounds[bounds.length - 1] * 1000
        const lower = i === 0 ? 0 : bounds[i - 1]
        const below = i === 0 ? 0 : counts[i - 1]
        const inBucket = counts[i] - below
        const frac = inBucket > 0 ? (rank - below) / inBucket : 1
        return (lower + (bounds[i] - lower) * frac) * 1000
      }
    }
    return null
  }

  /** sampleAgo: the oldest kept sample no older than ms before the newest. */
  function sampleAgo(ms) {
    const newest = samples[samples.length - 1]
    for (const s of samples) if (newest.time - s.time <= ms) return s
    return newest
  }

  // ---- history and charts ----

  function push(t, point) {
    history.t.push(t)
    const n = history.t.length
    for (const [key, col] of history.cols) col.push(point.has(key) ? point.get(key) : null)
    for (const [key, v] of point) {
      // A series starts with its first value: one that never had any (an upstream with no traffic) is not drawn.
      if (v === null || history.cols.has(key)) continue
      const col = new Array(n - 1).fill(null)
      col.push(v)
      history.cols.set(key, col)
    }
    if (n > WINDOW) {
      history.t.shift()
      for (const [key, col] of history.cols) {
        col.shift()
        // A series with no value left in the window (an upstream a reload removed) goes, so memory stays bounded.
        if (col.every((v) => v === null)) history.cols.delete(key)
      }
    }
  }

  /** Chart specs: fixed series, or every history key under a prefix (one series per failure reason, upstream). */
  const SPECS = {
    requests: {
      unit: "/s",
      series: [
        { key: "req.total", label: "all", color: COLOR.info },
        { key: "req.2xx", label: "2xx", color: COLOR.ok },
        { key: "req.3xx", label: "3xx", color: PALETTE[5] },
        { key: "req.4xx", label: "4xx", color: COLOR.warn },
        { key: "req.5xx", label: "5xx", color: COLOR.bad },
      ],
    },
    errors: {
      unit: "/s",
      series: [
        { key: "req.4xx", label: "4xx", color: COLOR.warn },
        { key: "req.5xx", label: "5xx", color: COLOR.bad },
        { key: "backend.errors", label: "backend errors", color: PALETTE[4] },
      ],
    },
    handshakes: {
      unit: "/s",
      series: [
        { key: "hs.full", label: "full", color: COLOR.info },
        { key: "hs.resumed", label: "resumed", color: COLOR.ok },
        { key: "hs.failed", label: "failed", color: COLOR.bad },
      ],
    },
    failures: { unit: "/s", prefix: "fail.", none: "No handshake has failed since start." },
    latency: { unit: " ms", prefix: "lat.", none: "No upstream has answered a request yet." },
  }

  function seriesOf(spec) {
    if (spec.series) return spec.series
    const keys = [...history.cols.keys()].filter((k) => k.startsWith(spec.prefix)).sort()
    return keys.map((key, i) => ({ key, label: key.slice(spec.prefix.length), color: PALETTE[i % PALETTE.length] }))
  }

  /** xRange: with fewer than two points uPlot spans about 1,000 days around one time; show the last minute. */
  function xRange(u, min, max) {
    const t = u.data[0]
    if (t && t.length >= 2) return [min, max]
    const end = t && t.length === 1 ? t[0] : Date.now() / 1000
    return [end - 60, end + 1]
  }

  function chartOptions(node, spec, series) {
    return {
      width: Math.max(200, node.clientWidth),
      height: 200,
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: xRange },
        y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.15 : 1] },
      },
      axes: [
        { stroke: COLOR.muted, grid: { stroke: COLOR.line, width: 1 }, ticks: { stroke: COLOR.line } },
        {
          stroke: COLOR.muted,
          size: 48,
          grid: { stroke: COLOR.line, width: 1 },
          ticks: { stroke: COLOR.line },
          values: (_u, splits) => splits.map((v) => fmtRate(v)),
        },
      ],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 1.5,
          points: { show: false },
          value: (_u, v) => (v === null || v === undefined ? "–" : `${fmtRate(v)}${spec.unit}`),
        })),
      ],
    }
  }

  function draw() {
    for (const node of document.querySelectorAll("[data-chart]")) {
      const name = node.dataset.chart
      const spec = SPECS[name]
      const series = seriesOf(spec)
      const data = [history.t.slice(), ...series.map((s) => (history.cols.get(s.key) || []).slice())]
      let chart = charts.get(name)
      const signature = series.map((s) => s.key).join("|")
      if (series.length === 0) {
        if (chart) chart.plot.destroy()
        charts.delete(name)
        if (!node.querySelector(".empty")) empty(node, spec.none)
        continue
      }
      if (chart && chart.signature !== signature) {
        chart.plot.destroy()
        chart = undefined
      }
      if (!chart) {
        clear(node)
        chart = { signature, plot: new uPlot(chartOptions(node, spec, series), data, node) }
        charts.set(name, chart)
      } else {
        chart.plot.setData(data)
      }
      // Without a cursor on the chart, the legend shows the newest values (uPlot's default shows none).
      const plot = chart.plot
      if (!(plot.cursor.left >= 0) && data[0].length) plot.setLegend({ idx: data[0].length - 1 })
    }
  }

  let resizeTimer
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer)
    resizeTimer = setTimeout(() => {
      for (const [name, chart] of charts) {
        const node = document.querySelector(`[data-chart="${name}"]`)
        chart.plot.setSize({ width: Math.max(200, node.clientWidth), height: 200 })
      }
    }, 150)
  })

  // ---- one poll ----

  function record(d) {
    // The same one-second snapshot twice (a poll inside the server's second): no new point.
    if (previous && d.time === previous.time) return
    const t = d.time / 1000
    const point = new Map()
    if (previous) {
      const dt = (d.time - previous.time) / 1000
      const rate = (now, before) => {
        const x = delta(now, before)
        return x === null || dt <= 0 ? null : x / dt
      }
      point.set("req.total", rate(sumValues(d.requests), sumValues(previous.requests)))
      for (const c of ["2xx", "3xx", "4xx", "5xx"]) point.set(`req.${c}`, rate(d.requests[c], previous.requests[c]))
      point.set("backend.errors", rate(sumValues(d.backend_errors), sumValues(previous.backend_errors)))
      point.set("hs.full", rate(d.handshakes.full, previous.handshakes.full))
      point.set("hs.resumed", rate(d.handshakes.resumed, previous.handshakes.resumed))
      point.set("hs.failed", rate(sumValues(d.failures), sumValues(previous.failures)))
      for (const reason in d.failures) point.set(`fail.${reason}`, rate(d.failures[reason], previous.failures[reason]))
      const fb = d.latency.first_byte
      for (const name in fb) {
        point.set(`lat.${name}`, quantile(0.95, d.latency.bounds, fb[name], previous.latency.first_byte[name]))
      }
      push(t, point)
    }
    previous = d
    samples.push({
      time: d.time,
      requests: d.requests,
      handshakes: d.handshakes,
      failures: d.failures,
      first_byte: d.latency.first_byte,
      backends: backendTotals(d),
    })
    if (samples.length > WINDOW + 1) samples.shift()
  }

  /** backendTotals: each backend's response count and time-to-first-byte sum, by upstream and id. */
  function backendTotals(d) {
    const out = {}
    for (const u of d.upstreams) {
      for (const b of u.backends) out[`${u.name} ${b.id}`] = { n: b.responses, s: b.first_byte_seconds }
    }
    return out
  }

  function renderTiles(d) {
    const last = (key) => {
      const col = history.cols.get(key)
      return col?.length ? col[col.length - 1] : null
    }
    setText("t-rps", fmtRate(last("req.total")))
    const full = last("hs.full")
    const resumed = last("hs.resumed")
    setText("t-hps", full === null ? "–" : fmtRate(full + resumed))
    const minute = sampleAgo(60_000)
    const hsFull = delta(d.handshakes.full, minute.handshakes.full) || 0
    const hsResumed = delta(d.handshakes.resumed, minute.handshakes.resumed) || 0
    byId("t-resumed").textContent =
      hsFull + hsResumed > 0 ? `per second · ${pct(hsResumed, hsFull + hsResumed).toFixed(0)}% resumed` : "per second"
    const reqs = delta(sumValues(d.requests), sumValues(minute.requests)) || 0
    const errs = delta(d.requests["5xx"], minute.requests["5xx"]) || 0
    const share = pct(errs, reqs)
    setText(
      "t-5xx",
      reqs > 0 ? `${share.toFixed(share < 10 ? 1 : 0)}%` : "–",
      errs === 0 ? "ok" : share >= 1 ? "bad" : "warn",
    )
    const failed = delta(sumValues(d.failures), sumValues(minute.failures)) || 0
    setText("t-hsfail", fmtCount(failed), failed > 0 ? "warn" : "ok")
    let open = 0
    for (const l of d.listeners) open += l.connections
    setText("t-conn", fmtCount(open))
    byId("t-listeners").textContent = `clients on ${d.listeners.length} listener${d.listeners.length === 1 ? "" : "s"}`
    let up = 0
    let all = 0
    for (const u of d.upstreams)
      for (const b of u.backends) {
        all++
        if (b.state === "up" && !b.ejected) up++
      }
    setText("t-up", all ? `${up}/${all}` : "–", all === 0 ? undefined : up === all ? "ok" : up === 0 ? "bad" : "warn")
    byId("t-up-of").textContent = all ? "in service" : "no upstreams"
    const certs = d.certificates.slice().sort((a, b) => a.days_left - b.days_left)
    if (certs.length) {
      setText("t-expiry", `${certs[0].days_left} d`, expiryTone(certs[0].days_left))
      byId("t-expiry-name").textContent = certs[0].names[0] || certs[0].listener
    } else {
      setText("t-expiry", "–")
      byId("t-expiry-name").textContent = "no certificates"
    }
  }

  function expiryTone(days) {
    return days < 7 ? "bad" : days < 30 ? "warn" : "ok"
  }

  function renderFailureReasons(d) {
    const body = byId("failure-reasons").tBodies[0]
    clear(body)
    const old = sampleAgo(WINDOW * 1000)
    const reasons = Object.keys(d.failures).sort((a, b) => d.failures[b] - d.failures[a])
    if (!reasons.length) {
      body.appendChild(row([{ text: "none since start", cls: "muted", span: 3 }]))
      return
    }
    for (const r of reasons) {
      const recent = delta(d.failures[r], old.failures[r])
      body.appendChild(
        row([
          { text: r, cls: "mono" },
          { text: recent === null ? "–" : fmtCount(recent), cls: recent ? "num warn" : "num" },
          { text: fmtCount(d.failures[r]), cls: "num" },
        ]),
      )
    }
  }

  function bars(container, counts, emptyText, limit) {
    const total = sumValues(counts)
    if (!total) {
      empty(container, emptyText)
      return
    }
    clear(container)
    const keys = Object.keys(counts)
      .sort((a, b) => counts[b] - counts[a])
      .slice(0, limit || 12)
    for (const k of keys)
      container.appendChild(bar(k, pct(counts[k], total), `${fmtCount(counts[k])} of ${fmtCount(total)}`))
  }

  function bar(name, share, title, tone) {
    const line = el("div", "bar")
    line.title = title
    const label = el("span", "name mono", name)
    label.title = name
    const track = el("span", "track")
    const fill = el("span", `fill${tone ? ` ${tone}` : ""}`)
    fill.style.width = `${Math.min(100, share).toFixed(1)}%`
    track.appendChild(fill)
    line.append(label, track, el("span", "pct", `${share.toFixed(share > 0 && share < 10 ? 1 : 0)}%`))
    return line
  }

  function renderBackends(d) {
    const body = byId("backends").tBodies[0]
    clear(body)
    if (!d.upstreams.length) {
      body.appendChild(row([{ text: "No upstreams configured.", cls: "muted", span: 8 }]))
      return
    }
    const minute = sampleAgo(60_000)
    for (const u of d.upstreams) {
      const fb = d.latency.first_byte[u.name]
      const p50 = quantile(0.5, d.latency.bounds, fb, minute.first_byte[u.name])
      const p95 = quantile(0.95, d.latency.bounds, fb, minute.first_byte[u.name])
      const latency = p50 === null ? "no requests" : `${fmtMs(p50)} / ${fmtMs(p95)}`
      for (const b of u.backends) {
        const [state, tone] = b.ejected
          ? ["ejected", "bad"]
          : b.state === "up"
            ? ["up", "ok"]
            : b.state === "draining"
              ? ["draining", "warn"]
              : [b.state, "bad"]
        const h = b.health
        const check = !h
          ? { text: "no active check", cls: "num muted" }
          : h.healthy === false
            ? { text: `failing: ${h.last_error || "unhealthy"}`, cls: "num bad", title: h.last_error || "" }
            : h.healthy === undefined
              ? { text: "not checked yet", cls: "num muted" }
              : { text: `ok · ${fmtMs(h.last_duration_ms)}`, cls: "num ok" }
        const then = minute.backends[`${u.name} ${b.id}`]
        const n = then ? delta(b.responses, then.n) : null
        const mean = n ? `${fmtMs((1000 * (b.first_byte_seconds - then.s)) / n)}` : "no responses"
        const flight = b.max_connections === null ? fmtCount(b.in_flight) : `${b.in_flight} / ${b.max_connections}`
        body.appendChild(
          row([
            { text: u.name },
            { text: b.id + (b.backup ? " (backup)" : ""), cls: "mono" },
            { text: state, cls: `state ${tone}` },
            { text: flight, cls: "num" },
            { text: fmtCount(b.errors), cls: b.errors ? "num warn" : "num" },
            { text: mean, cls: "num", title: "this backend's mean time to first byte, last minute" },
            { text: latency, cls: "num", title: "time to first byte of the upstream's responses, last minute" },
            check,
          ]),
        )
      }
    }
  }

  function renderCertificates(d) {
    const box = byId("certificates")
    if (!d.certificates.length) {
      empty(box, "No TLS listener, so no certificates.")
      return
    }
    clear(box)
    const certs = d.certificates.slice().sort((a, b) => a.days_left - b.days_left)
    for (const c of certs) {
      const line = el("div", "row cert")
      const name = el("span", "name")
      name.appendChild(el("span", "mono", c.names.join(", ") || "(no names)"))
      name.appendChild(
        el("span", "sub", `${c.listener} · ${c.source_kind} · ${c.key_type} · until ${c.not_after.slice(0, 10)}`),
      )
      name.title = `${c.names.join(", ")}\nissuer: ${c.issuer}\nsha256: ${c.fingerprint256}`
      const track = el("span", "track")
      const tone = expiryTone(c.days_left)
      const fill = el("span", `fill ${tone}`)
      fill.style.width = `${Math.max(1, Math.min(100, (100 * Math.max(0, c.days_left)) / EXPIRY_DAYS_SHOWN)).toFixed(1)}%`
      track.appendChild(fill)
      const days = el("span", `days ${tone}`, c.days_left < 0 ? "expired" : `${c.days_left} d`)
      days.dataset.days = String(c.days_left)
      line.append(name, track, days)
      box.appendChild(line)
    }
  }

  function renderRecentFailures(d) {
    const body = byId("recent-failures").tBodies[0]
    clear(body)
    if (!d.recent_failures.length) {
      body.appendChild(row([{ text: "No handshake failures since start.", cls: "muted", span: 5 }]))
      return
    }
    for (const f of d.recent_failures.slice(0, RECENT_SHOWN)) {
      body.appendChild(
        row([
          { text: new Date(f.time).toLocaleTimeString() },
          { text: f.listener },
          { text: f.reason, cls: "mono warn" },
          { text: f.sni === null ? "(none)" : f.sni, cls: f.sni === null ? "muted" : "mono" },
          { text: f.client, cls: "mono" },
        ]),
      )
    }
  }

  function renderCensus(d) {
    const panel = byId("census")
    // null: this build or config has no ClientHello census (GET /tls/clients): the panel stays hidden.
    panel.hidden = !d.census
    if (!d.census) return
    const box = byId("census-body")
    clear(box)
    const listeners = d.census.listeners || {}
    const names = Object.keys(listeners)
    if (!names.length) {
      empty(box, "No ClientHello seen yet.")
      return
    }
    for (const name of names) {
      const c = listeners[name]
      const part = el("div", "census-listener")
      part.appendChild(el("h3", "", `${name} · ${fmtCount(c.clients)} recent clients`))
      const grid = el("div", "census-grid")
      const group = (title, fill) => {
        const g = el("div")
        g.appendChild(el("h3", "", title))
        fill(g)
        grid.appendChild(g)
      }
      group("Profile what-if: share it would refuse", (g) => {
        const profiles = Object.keys(c.whatif || {})
        if (!profiles.length) g.appendChild(el("div", "empty", "no profiles"))
        for (const p of profiles) {
          const w = c.whatif[p]
          const share = pct(w.refused, c.clients)
          // The reasons (no shared version, cipher, group...) go in the tooltip; parts it could not judge below.
          const why = Object.entries(w.reasons || {})
            .map(([r, n]) => `${r}: ${n}`)
            .join(", ")
          const title = `${fmtCount(w.refused)} of ${fmtCount(c.clients)}${why ? ` (${why})` : ""}`
          g.appendChild(bar(p, share, title, share > 0 ? "bad" : "ok"))
          if (w.unjudged?.length) g.appendChild(el("div", "sub muted", `${p}: not judged: ${w.unjudged.join(", ")}`))
        }
      })
      for (const [title, key] of [
        ["TLS versions offered", "versions"],
        ["Groups offered", "groups"],
        ["Ciphers offered", "ciphers"],
        ["Signature algorithms offered", "sigalgs"],
      ]) {
        group(title, (g) => {
          const counts = c[key] || {}
          const keys = Object.keys(counts).sort((a, b) => counts[b] - counts[a])
          if (!keys.length) g.appendChild(el("div", "empty", "none seen"))
          for (const k of keys.slice(0, 8)) {
            g.appendChild(bar(k, pct(counts[k], c.clients), `${fmtCount(counts[k])} of ${fmtCount(c.clients)}`))
          }
        })
      }
      part.appendChild(grid)
      box.appendChild(part)
    }
  }

  function renderFleet(d) {
    const body = byId("instances").tBodies[0]
    clear(body)
    const fleet = d.instances
    if (!fleet) {
      body.appendChild(
        row([{ text: "No cluster.store configured: this instance runs on its own.", cls: "muted", span: 6 }]),
      )
      return
    }
    const list = fleet.instances || []
    if (!list.length) {
      const why = fleet.connected ? "the store lists no instance yet" : "the store is unreachable and none was read"
      body.appendChild(row([{ text: `No instances: ${why}.`, cls: "muted", span: 6 }]))
      return
    }
    for (const i of list) {
      const age = Math.max(0, (d.time - Date.parse(i.updated_at)) / 1000)
      const tone = i.status === "serving" ? "ok" : i.status === "draining" ? "warn" : "muted"
      const addresses = Object.entries(i.addresses || {})
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")
      body.appendChild(
        row([
          { text: i.id + (i.id === fleet.id ? " (this one)" : ""), cls: "mono" },
          { text: i.status, cls: `state ${tone}` },
          { text: i.version },
          { text: i.pid, cls: "num" },
          { text: addresses, cls: "mono wrap" },
          { text: `${age.toFixed(0)} s ago`, cls: age > 10 ? "num bad" : "num" },
        ]),
      )
    }
  }

  function render(d) {
    const meta = [`generation ${d.generation}`]
    if (d.loaded_at) meta.push(`loaded ${new Date(d.loaded_at).toLocaleString()}`)
    meta.push(`${d.listeners.length} listener${d.listeners.length === 1 ? "" : "s"}`)
    byId("meta").textContent = meta.join(" · ")
    draw()
    renderTiles(d)
    renderFailureReasons(d)
    bars(byId("versions"), d.versions, "No completed handshakes yet.")
    bars(byId("ciphers"), d.ciphers, "No completed handshakes yet.")
    renderBackends(d)
    renderCertificates(d)
    renderRecentFailures(d)
    renderCensus(d)
    renderFleet(d)
  }

  function setLive(text, cls) {
    const badge = byId("live")
    badge.textContent = text
    badge.className = `badge ${cls}`
  }

  let busy = false
  async function poll() {
    if (busy) return
    busy = true
    try {
      const res = await fetch("dashboard/data", { cache: "no-store", credentials: "same-origin" })
      if (res.status === 401) {
        setLive("401: the admin token is missing or wrong", "badge-bad")
      } else if (!res.ok) {
        setLive(`HTTP ${res.status} from dashboard/data`, "badge-bad")
      } else {
        const d = await res.json()
        record(d)
        render(d)
        polls++
        lastOk = Date.now()
        setLive("live", "badge-ok")
      }
    } catch (err) {
      setLive(lastOk ? `no answer for ${Math.round((Date.now() - lastOk) / 1000)} s` : "unreachable", "badge-bad")
      if (!(err instanceof TypeError)) throw err
    } finally {
      busy = false
      schedule()
    }
  }

  let timer
  /** One timer at a time, none while the tab is hidden (a hidden tab costs the server nothing). */
  function schedule() {
    clearTimeout(timer)
    if (!document.hidden) timer = setTimeout(poll, POLL_MS)
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      clearTimeout(timer)
      void poll()
    }
  })

  // For tests and the curious: the charts' data as uPlot holds it.
  window.portcullisDashboard = {
    get polls() {
      return polls
    },
    charts() {
      const out = {}
      for (const node of document.querySelectorAll("[data-chart]")) {
        const c = charts.get(node.dataset.chart)
        out[node.dataset.chart] = c
          ? { series: c.plot.series.slice(1).map((s) => s.label), data: c.plot.data.map((col) => col.slice()) }
          : null
      }
      return out
    },
  }

  void poll()
})()
