// The dashboard: one page over the service's REST API, with the bearer token kept in this tab's
// sessionStorage. Every string from the service is put in the page as text (append/textContent),
// never as HTML; pages that show live data poll once a second while the tab is visible.
"use strict";

(() => {
  const KEY = "cms-transfer-token";
  const POLL = 1000;
  const PAGE = 50;
  const STATES = ["running", "interrupted", "completed", "failed", "cancelled"];
  const API = new URL("..", location.href);  // the page is at /ui/, the API beside it
  let stopPage = () => {};
  let shown = 0;  // how many pages were shown: a page still loading when another replaced it stops itself
  let place = "";  // the address of the page shown, without its query

  class Unauthorized extends Error {}

  class Problem extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  // ---- building the page, as text ----

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "class") node.className = value;
      else if (["value", "checked", "disabled", "hidden", "required", "max", "min"].includes(name)) node[name] = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function table(headers, rows, label) {
    return el("div", {class: "scroll"}, el("table", {"aria-label": label},
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {scope: "col"}, h)))),
      el("tbody", {}, rows)));
  }

  const view = () => document.getElementById("view");

  function say(where, error) {
    where.textContent = error ? (error instanceof Problem ? `${error.message} (${error.status})` : String(error.message || error)) : "";
  }

  // ---- numbers for people ----

  function bytes(n) {
    if (n === null || n === undefined) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${i ? n.toFixed(n < 10 ? 2 : 1) : n} ${units[i]}`;
  }

  const rate = (n) => (n === null || n === undefined ? "" : `${bytes(Math.round(n))}/s`);

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
    seconds = Math.round(seconds);
    if (seconds < 60) return `${seconds} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
    return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  }

  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
  const settled = (s) => s.objects_done + s.objects_skipped + s.objects_unverified + s.objects_failed;

  function percent(s) {
    if (s.bytes_total) return Math.floor((100 * s.bytes_done) / s.bytes_total);
    if (s.objects_total) return Math.floor((100 * settled(s)) / s.objects_total);
    return s.state === "completed" ? 100 : 0;
  }

  function progress(s) {
    const done = percent(s);
    return el("span", {class: "progress"},
      el("progress", {max: 100, value: done, "aria-label": `${s.id}: ${done}% of the bytes`}),
      ` ${done}% · ${settled(s)}/${s.objects_total}${s.listing ? "+" : ""} objects`);
  }

  const stateOf = (state) => el("span", {class: `state state-${state}`}, state);

  // Throughput from two readings of bytes_done, for the transfers list.
  class Rates {
    constructor() { this.seen = new Map(); }

    of(s) {
      if (s.state !== "running") return s.seconds ? s.bytes_done / s.seconds : null;
      const now = performance.now() / 1000;
      const last = this.seen.get(s.id);
      this.seen.set(s.id, {at: now, bytes: s.bytes_done, rate: last ? last.rate : null});
      if (!last || now <= last.at) return last ? last.rate : null;
      const fresh = (s.bytes_done - last.bytes) / (now - last.at);
      const smooth = last.rate === null ? fresh : 0.5 * last.rate + 0.5 * fresh;
      this.seen.get(s.id).rate = smooth;
      return smooth;
    }
  }

  const eta = (s, r) => (s.state === "running" && r > 0 && !s.listing ? duration((s.bytes_total - s.bytes_done) / r) : "");

  // ---- the token and the API ----

  // decodeURIComponent, but a malformed escape (typed by hand) is taken as it stands.
  function decoded(text) {
    try {
      return decodeURIComponent(text);
    } catch (e) {
      return text;
    }
  }

  function takeFragmentToken() {
    const found = location.hash.match(/^#token=(.+)$/);
    if (!found) return;
    sessionStorage.setItem(KEY, decoded(found[1]));
    history.replaceState(null, "", `${location.pathname}${location.search}#/`);
  }

  async function api(method, path, body) {
    const token = sessionStorage.getItem(KEY);
    if (!token) throw new Unauthorized("not signed in");
    const headers = {Authorization: `Bearer ${token}`};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(new URL(path, API), {method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body)});
    if (response.status === 401) {
      sessionStorage.removeItem(KEY);
      signIn("The service did not accept the token; sign in again.");
      throw new Unauthorized("the token was not accepted");
    }
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json() : await response.text();
    if (!response.ok) throw new Problem(response.status, (data && data.detail) || response.statusText);
    return data;
  }

  const get = (path) => api("GET", path);
  const post = (path, body) => api("POST", path, body);

  // Calls `read` now and then once a second after each answer (never two at once), skipping the
  // seconds while the tab is hidden; returns the function that stops it.
  function poll(read, failed) {
    let timer = null;
    let stopped = false;
    const tick = async () => {
      if (stopped) return;
      if (!document.hidden) {
        try {
          await read();
          failed(null);
        } catch (e) {
          if (e instanceof Unauthorized) { stopped = true; return; }
          failed(e);
        }
      }
      if (!stopped) timer = setTimeout(tick, POLL);
    };
    tick();
    return () => { stopped = true; clearTimeout(timer); };
  }

  // ---- sign-in ----

  function signIn(message) {
    stopPage();
    shown += 1;
    place = "";
    document.getElementById("nav").hidden = true;
    view().replaceChildren();
    document.getElementById("signin").hidden = false;
    document.getElementById("signin-error").textContent = message || "";
    document.getElementById("token").focus();
  }

  async function submitToken(event) {
    event.preventDefault();
    const field = document.getElementById("token");
    sessionStorage.setItem(KEY, field.value.trim());
    field.value = "";
    try {
      await get("health");
      await get("storages");  // needs the token: a wrong one answers 401 and signs in again
      route();
    } catch (e) {
      if (!(e instanceof Unauthorized)) document.getElementById("signin-error").textContent = e.message;
    }
  }

  // ---- the transfers list ----

  function listPage() {
    const query = new URLSearchParams(location.hash.split("?")[1] || "");
    const state = STATES.includes(query.get("state")) ? query.get("state") : "";
    const offset = Math.max(0, parseInt(query.get("offset") || "0", 10) || 0);
    const rates = new Rates();
    const error = el("p", {class: "error", role: "alert"});
    const filter = el("select", {id: "state-filter", onchange: () => go(filter.value, 0)},
      el("option", {value: ""}, "all"), STATES.map((s) => el("option", {value: s}, s)));
    filter.value = state;
    const body = el("tbody");
    const count = el("span", {"aria-live": "polite"});
    const back = el("button", {id: "newer", type: "button", onclick: () => go(state, Math.max(0, offset - PAGE))}, "Newer");
    const next = el("button", {id: "older", type: "button", onclick: () => go(state, offset + PAGE)}, "Older");
    let keys = "";
    const rows = new Map();

    function go(shown, from) {  // the list in one state from an offset, as its own address
      const parts = new URLSearchParams();
      if (shown) parts.set("state", shown);
      if (from) parts.set("offset", String(from));
      location.hash = `#/${parts.toString() ? `?${parts}` : ""}`;
    }

    function cells(s) {
      const r = rates.of(s);
      return [el("td", {}, el("a", {href: `#/transfers/${encodeURIComponent(s.id)}`}, s.id)),
        el("td", {class: "route"}, s.route), el("td", {class: "path"}, `${s.source} → ${s.target}`, s.copy ? "" : " (move)"),
        el("td", {}, stateOf(s.state)), el("td", {}, progress(s)), el("td", {class: "num"}, rate(r)),
        el("td", {class: "num"}, eta(s, r)), el("td", {}, when(s.started))];
    }

    async function refresh() {
      const page = await get(`transfers?limit=${PAGE}&offset=${offset}${state ? `&state=${state}` : ""}`);
      const now = page.items.map((s) => s.id).join("\n");
      if (now !== keys) {  // the rows changed: build them again (else update in place, keeping focus)
        keys = now;
        rows.clear();
        body.replaceChildren(...page.items.map((s) => {
          const row = el("tr", {"data-id": s.id}, cells(s));
          rows.set(s.id, row);
          return row;
        }));
      } else {
        for (const s of page.items) {
          const row = rows.get(s.id);
          cells(s).forEach((cell, i) => { if (i) row.children[i].replaceWith(cell); });
        }
      }
      if (!page.items.length) body.replaceChildren(el("tr", {}, el("td", {colspan: 8, class: "muted"}, "No transfers.")));
      const last = Math.min(page.total, offset + page.items.length);
      count.textContent = page.total ? `${offset + 1}–${last} of ${page.total}` : "0 transfers";
      back.disabled = offset === 0;
      next.disabled = last >= page.total;
    }

    view().replaceChildren(el("h1", {}, "Transfers"),
      el("div", {class: "toolbar"}, el("div", {class: "field"}, el("label", {for: "state-filter"}, "State"), filter),
        el("a", {href: "#/new"}, "Start a transfer")),
      error,
      el("div", {class: "scroll"}, el("table", {"aria-label": "Transfers"},
        el("thead", {}, el("tr", {}, ["ID", "Route", "Source → target", "State", "Progress", "Throughput", "ETA", "Started"]
          .map((h) => el("th", {scope: "col"}, h)))), body)),
      el("div", {class: "pager"}, back, next, count));
    return poll(refresh, (e) => say(error, e));
  }

  // ---- one transfer ----

  function throughputOf(samples) {
    const xs = [];
    const ys = [];
    for (let i = 1; i < samples.length; i += 1) {
      const seconds = samples[i].at - samples[i - 1].at;
      if (seconds <= 0) continue;
      xs.push(samples[i].at);
      ys.push(Math.max(0, (samples[i].bytes_done - samples[i - 1].bytes_done) / seconds));
    }
    return [xs, ys];
  }

  const SECONDS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400];  // x ticks
  const DAYS = [86400, 172800, 604800];

  function chart(box, label, series, bars) {
    const width = () => Math.max(280, box.clientWidth - 8);
    const options = {width: width(), height: 220,
      series: [{}, {label, stroke: "#1f5fbf", fill: bars ? "#1f5fbf99" : "#1f5fbf22", width: bars ? 1 : 2,
        value: (u, v) => series(v), paths: bars ? uPlot.paths.bars({size: [0.7, 40]}) : undefined, points: {show: !bars}}],
      axes: [{incrs: bars ? DAYS : SECONDS}, {values: (u, ticks) => ticks.map(series), size: 80}],
      scales: {x: {time: true, range: bars ? (u, min, max) => [min - 43200, max + 43200] : null},  // whole bars
        y: {range: (u, min, max) => [0, Math.max(1024, max || 0)]}}};
    const plot = new uPlot(options, [[], []], box);
    const resize = () => plot.setSize({width: width(), height: 220});
    window.addEventListener("resize", resize);
    const set = (data) => {
      box.hidden = data[0].length < 2;  // a line needs two points
      plot.setData(data);
      if (!box.hidden) resize();  // its width is known once it is shown
    };
    return {set, stop: () => { window.removeEventListener("resize", resize); plot.destroy(); }};
  }

  function counts(title, values, label) {
    const entries = Object.entries(values || {});
    return [el("h2", {}, title), entries.length ? table([label, "Objects"],
      entries.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {class: "num"}, v))), title) : el("p", {class: "muted"}, "none")];
  }

  function pathMessages(title, rows) {
    if (!rows.length) return [];
    return [el("h2", {}, `${title} (${rows.length})`),
      table(["Object", "Message"], rows.map((r) => el("tr", {}, el("td", {class: "path"}, r.path),
        el("td", {}, r.message || ""))), title)];
  }

  // What the record says about how a transfer stands, or how many of its objects failed.
  const why = (s) => s.message || (s.objects_failed ? `${s.objects_failed} of ${s.objects_total} objects failed` : "");

  function detailPage(id) {
    const error = el("p", {class: "error", role: "alert"});
    const head = el("div");
    const more = el("div");
    const box = el("div", {class: "plot", role: "img", "aria-label": "Throughput over time"});
    const actions = el("div", {class: "toolbar"});
    const actionError = el("p", {class: "error", role: "alert"});
    const plot = chart(box, "throughput", rate, false);
    const waiting = el("p", {class: "muted"});
    let last = null;  // the latest status
    let samples = [];
    let sampled = null;  // the state the samples were read in: read again while running, or once it changed

    // The buttons are made once and only enabled or disabled, so that focus and clicks stay on them.
    const cancel = el("button", {type: "button", class: "danger", disabled: true, onclick: () => act(cancel, "cancel",
      `Cancel transfer ${id}? Its partial uploads are discarded; objects already copied stay.`)}, "Cancel");
    const resume = el("button", {type: "button", class: "primary", disabled: true, onclick: () => act(resume, "resume")},
      "Resume");
    const cleanup = el("button", {type: "button", class: "danger", disabled: true, onclick: () => act(cleanup, "cleanup",
      `Discard the ${last.uploads_open} partial uploads of transfer ${id}? Their objects start afresh on resume.`)}, "Clean up");
    actions.append(cancel, resume, cleanup);

    function enable(s) {
      cancel.disabled = !["running", "interrupted", "failed"].includes(s.state);
      resume.disabled = !["interrupted", "failed", "cancelled"].includes(s.state);
      cleanup.disabled = s.state === "running" || !s.uploads_open;
    }

    async function act(button, what, ask) {
      if (ask && !window.confirm(ask)) return;
      button.disabled = true;
      try {
        await post(`transfers/${encodeURIComponent(id)}/${what}`);
        say(actionError, null);
      } catch (e) {
        say(actionError, e);
        enable(last);
      }
    }

    function render(s, held) {
      const [xs, ys] = throughputOf(held);
      const now = ys.length ? ys[ys.length - 1] : null;
      head.replaceChildren(
        el("p", {id: "transfer-state"}, stateOf(s.state), why(s) ? el("span", {class: "muted"}, ` — ${why(s)}`) : ""),
        el("p", {id: "transfer-progress"}, progress(s), ` · ${bytes(s.bytes_done)} of ${bytes(s.bytes_total)}`,
          s.state === "running" && now !== null ? ` · ${rate(now)}` : "", s.state === "running" ? ` · ETA ${eta(s, now) || "?"}` : ""),
        el("dl", {class: "facts"},
          ...[["Source", s.source], ["Target", s.target], ["Operation", s.copy ? "copy" : "move"], ["Route", s.route],
            ["Recursive", s.recursive ? "yes" : "no"], ["Started", when(s.started)], ["Finished", when(s.finished)],
            ["Run time", duration(s.seconds)], ["Objects", `${s.objects_done} done, ${s.objects_skipped} skipped, ` +
              `${s.objects_unverified} unverified, ${s.objects_failed} failed of ${s.objects_total}`],
            ["Uploads open", String(s.uploads_open)], ["Host", s.host ? `${s.host} (pid ${s.pid})` : ""]]
            .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
      enable(s);
      const workers = Object.entries(s.workers || {});
      more.replaceChildren(
        ...counts("Objects by method", s.methods, "Method"),
        ...counts("Objects by proof", s.proofs, "Proof"),
        ...(workers.length ? [el("h2", {}, "Workers"), table(["Worker", "Objects", "Bytes"], workers.map(([w, v]) =>
          el("tr", {}, el("td", {class: "path"}, w), el("td", {class: "num"}, v.objects), el("td", {class: "num"}, bytes(v.bytes)))),
        "Workers")] : []),
        ...pathMessages("Failed objects", s.errors),
        ...pathMessages("Unverified objects", s.unverified),
        ...pathMessages("Warnings", s.warnings));
      plot.set([xs, ys]);
      waiting.textContent = xs.length >= 2 ? "" : s.state === "running" ? "The plot starts after a few seconds of samples."
        : `Too short a run to plot; on average ${rate(s.seconds ? s.bytes_done / s.seconds : null) || "-"}.`;
    }

    async function refresh() {
      const path = `transfers/${encodeURIComponent(id)}`;
      last = await get(path);
      if (last.state === "running" || last.state !== sampled) {
        samples = (await get(`${path}/samples`)).samples;
        sampled = last.state;
      }
      render(last, samples);
    }

    view().replaceChildren(el("p", {}, el("a", {href: "#/"}, "← Transfers")), el("h1", {}, `Transfer ${id}`), error,
      el("section", {"aria-label": "Status"}, head, actions, actionError),
      el("section", {"aria-label": "Throughput"}, el("h2", {}, "Throughput"), waiting, box), el("section", {"aria-label": "Objects"}, more));
    const stop = poll(refresh, (e) => say(error, e));
    return () => { stop(); plot.stop(); };
  }

  // ---- a new transfer ----

  function picker(side, storages, onPick) {
    const storage = el("select", {id: `${side}-storage`, required: true}, storages.map((s) => el("option", {value: s.name}, `${s.name} (${s.kind})`)));
    const path = el("input", {id: `${side}-path`, type: "text", placeholder: "folder/ or file", spellcheck: "false"});
    const panel = el("div", {id: `${side}-browser`, class: "browser", hidden: true, "aria-label": `Browse the ${side}`});
    const browse = el("button", {id: `${side}-browse`, type: "button", onclick: () => open(path.value.replace(/[^/]*$/, ""))}, "Browse…");

    async function open(folder) {
      panel.hidden = false;
      const where = `${storage.value}:${folder}`;
      const status = el("p", {class: "muted"}, `${where} …`);
      panel.replaceChildren(status);
      try {
        const listing = await get(`objects?location=${encodeURIComponent(where)}`);
        const up = folder.replace(/[^/]+\/$/, "");
        const items = listing.entries.map((e) => el("li", {}, el("button", {type: "button",
          onclick: () => (e.name.endsWith("/") ? open(folder + e.name) : choose(folder + e.name, false))},
        e.name.endsWith("/") ? `📁 ${e.name}` : `${e.name} (${bytes(e.size)})`)));
        status.textContent = where;
        panel.replaceChildren(status, el("div", {class: "row"},
          el("button", {type: "button", disabled: !folder, onclick: () => open(up)}, "Up"),
          el("button", {type: "button", onclick: () => choose(folder, true)}, "Use this folder"),
          el("button", {type: "button", onclick: () => { panel.hidden = true; }}, "Close")),
        el("ul", {}, items.length ? items : el("li", {class: "muted"}, "empty")),
        listing.truncated ? el("p", {class: "muted"}, `the first ${listing.entries.length} entries`) : "");
      } catch (e) {
        if (e instanceof Unauthorized) return;
        status.className = "error";
        say(status, e);
      }
    }

    function choose(value, folder) {
      path.value = value;
      panel.hidden = true;
      onPick(folder);
      path.focus();
    }

    return {storage, path, location: () => `${storage.value}:${path.value}`,
      field: el("fieldset", {}, el("legend", {}, side === "source" ? "Source" : "Target"),
        el("div", {class: "row"}, el("div", {class: "field"}, el("label", {for: `${side}-storage`}, "Storage"), storage),
          el("div", {class: "field grow"}, el("label", {for: `${side}-path`}, "Path"), path), browse), panel)};
  }

  async function newPage(current) {
    const error = el("p", {class: "error", role: "alert"});
    view().replaceChildren(el("h1", {}, "New transfer"), error);
    let storages;
    try {
      storages = await get("storages");
    } catch (e) {
      if (!(e instanceof Unauthorized) && current()) say(error, e);
      return () => {};
    }
    if (!current()) return () => {};  // another page was opened meanwhile
    const recursive = el("input", {id: "recursive", type: "checkbox"});
    const source = picker("source", storages, (folder) => { recursive.checked = folder; });
    const target = picker("target", storages, () => {});
    const move = el("input", {id: "move", type: "checkbox"});
    const sure = el("input", {id: "move-confirm", type: "checkbox"});
    const sureField = el("div", {class: "check", hidden: true}, sure,
      el("label", {for: "move-confirm"}, "I understand that each source object is deleted once its copy is verified"));
    move.addEventListener("change", () => { sureField.hidden = !move.checked; sure.checked = false; });
    const sync = el("select", {id: "sync"}, el("option", {value: ""}, "copy every object"),
      el("option", {value: "checksum"}, "skip objects whose target has the same checksum"),
      el("option", {value: "mtime"}, "skip objects whose target has the same size and a newer time"));
    const include = el("textarea", {id: "include", placeholder: "*.csv", spellcheck: "false"});
    const exclude = el("textarea", {id: "exclude", placeholder: "tmp/**", spellcheck: "false"});
    const parallel = el("input", {id: "parallel", type: "number", min: 1, max: 64, value: "8"});
    const preview = el("div", {"aria-live": "polite"});
    const previewButton = el("button", {type: "button", onclick: () => showPreview()}, "Preview (dry run)");
    const start = el("button", {type: "submit", class: "primary"}, "Start");
    const globs = (field) => field.value.split("\n").map((g) => g.trim()).filter(Boolean);

    function request() {
      const body = {source: source.location(), target: target.location(), recursive: recursive.checked, move: move.checked,
        include: globs(include), exclude: globs(exclude)};
      if (sync.value) body.sync = sync.value;
      return body;
    }

    async function showPreview() {
      say(error, null);
      preview.replaceChildren(el("p", {class: "muted"}, "Listing…"));
      try {
        const plan = await post("previews", request());
        const copies = plan.rows.filter((r) => r.action.startsWith("copy")).length;
        preview.replaceChildren(el("h2", {}, "Preview"),
          el("p", {}, `${plan.rows.length}${plan.truncated ? "+" : ""} objects: ${copies} to copy, ${plan.rows.length - copies} to skip, ` +
            `${bytes(plan.rows.reduce((n, r) => n + (r.action.startsWith("copy") ? r.size : 0), 0))} to send` +
            (plan.truncated ? ` (the first ${plan.rows.length} shown)` : "")),
          table(["Action", "Object", "Target", "Size"], plan.rows.map((r) => el("tr", {}, el("td", {}, r.action),
            el("td", {class: "path"}, r.path), el("td", {class: "path"}, r.target), el("td", {class: "num"}, bytes(r.size)))), "Preview"));
      } catch (e) {
        preview.replaceChildren();
        if (!(e instanceof Unauthorized)) say(error, e);
      }
    }

    async function submit(event) {
      event.preventDefault();
      say(error, null);
      if (move.checked && !sure.checked) {
        say(error, new Error("A move deletes the sources: tick the confirmation first."));
        sure.focus();
        return;
      }
      const body = request();
      const n = parseInt(parallel.value, 10);
      if (n) body.parallel = n;
      start.disabled = true;
      try {
        const status = await post("transfers", body);
        location.hash = `#/transfers/${encodeURIComponent(status.id)}`;
      } catch (e) {
        if (!(e instanceof Unauthorized)) say(error, e);
      } finally {
        start.disabled = false;
      }
    }

    view().append(el("form", {id: "new-transfer", onsubmit: submit, novalidate: true}, source.field, target.field,
      el("fieldset", {}, el("legend", {}, "Options"),
        el("div", {class: "row"}, el("div", {class: "check"}, recursive, el("label", {for: "recursive"}, "Recursive (a folder and everything under it)")),
          el("div", {class: "check"}, move, el("label", {for: "move"}, "Move (delete the sources)"))), sureField,
        el("div", {class: "row"}, el("div", {class: "field grow"}, el("label", {for: "sync"}, "Sync"), sync),
          el("div", {class: "field"}, el("label", {for: "parallel"}, "Parallel"), parallel)),
        el("div", {class: "row"}, el("div", {class: "field grow"}, el("label", {for: "include"}, "Include (one glob per line)"), include),
          el("div", {class: "field grow"}, el("label", {for: "exclude"}, "Exclude (one glob per line)"), exclude))),
      el("div", {class: "row"}, previewButton, start)), preview);
    return () => {};
  }

  // ---- statistics ----

  function statisticsPage() {
    const error = el("p", {class: "error", role: "alert"});
    const totals = el("div", {class: "totals"});
    const states = el("div");
    const routes = el("div");
    const box = el("div", {class: "plot", role: "img", "aria-label": "Bytes per day"});
    const days = el("div");
    const plot = chart(box, "bytes", bytes, true);
    const card = (label, value) => el("div", {class: "card"}, el("div", {class: "muted"}, label), el("div", {class: "value"}, value));

    async function refresh() {
      const s = await get("statistics");
      totals.replaceChildren(card("Bytes moved", bytes(s.bytes_total)), card("Objects moved", s.objects_total),
        card("Time running", duration(s.seconds_total)), card("Throughput", rate(s.throughput_bytes_per_second)));
      states.replaceChildren(table(["State", "Transfers"], Object.entries(s.transfers).map(([k, v]) =>
        el("tr", {}, el("td", {}, el("a", {href: `#/?state=${k}`}, k)), el("td", {class: "num"}, v))), "Transfers by state"));
      routes.replaceChildren(table(["Route", "Transfers", "Bytes", "Objects"], Object.entries(s.by_route).map(([k, v]) =>
        el("tr", {}, el("td", {class: "route"}, k), el("td", {class: "num"}, v.transfers), el("td", {class: "num"}, bytes(v.bytes)),
          el("td", {class: "num"}, v.objects))), "By route"));
      const byDay = Object.entries(s.by_day || {});
      plot.set([byDay.map(([d]) => Date.parse(`${d}T00:00:00Z`) / 1000), byDay.map(([, v]) => v)]);
      days.replaceChildren(el("details", {}, el("summary", {}, "Bytes per day as a table"),
        table(["Day (UTC)", "Bytes"], byDay.map(([d, v]) => el("tr", {}, el("td", {}, d), el("td", {class: "num"}, bytes(v)))), "Bytes per day")));
    }

    view().replaceChildren(el("h1", {}, "Statistics"), error, totals,
      el("section", {}, el("h2", {}, "Transfers by state"), states), el("section", {}, el("h2", {}, "By route"), routes),
      el("section", {}, el("h2", {}, "Bytes per day"), box, days));
    const stop = poll(refresh, (e) => say(error, e));
    return () => { stop(); plot.stop(); };
  }

  // ---- routing ----

  function route() {
    stopPage();
    stopPage = () => {};
    const mine = ++shown;
    const current = () => mine === shown;
    if (!sessionStorage.getItem(KEY)) return signIn();
    document.getElementById("signin").hidden = true;
    document.getElementById("nav").hidden = false;
    const hash = location.hash.split("?")[0];
    const detail = hash.match(/^#\/transfers\/(.+)$/);
    for (const link of document.querySelectorAll("nav a")) {
      const here = link.getAttribute("href") === (detail ? "#/" : hash || "#/");
      if (here) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
    }
    const focused = hash === place && document.activeElement ? document.activeElement.id : "";
    let page;
    if (detail) page = detailPage(decoded(detail[1]));
    else if (hash === "#/new") page = newPage(current);
    else if (hash === "#/statistics") page = statisticsPage();
    else page = listPage();
    Promise.resolve(page).then((stop) => { if (current()) stopPage = stop; else stop(); });
    const keep = focused && document.getElementById(focused);  // the same page in another state or offset
    (keep && !keep.disabled ? keep : document.getElementById("main")).focus({preventScroll: true});
    place = hash;
  }

  document.addEventListener("DOMContentLoaded", () => {
    takeFragmentToken();
    document.getElementById("signin-form").addEventListener("submit", submitToken);
    document.getElementById("signout").addEventListener("click", () => { sessionStorage.removeItem(KEY); signIn(); });
    window.addEventListener("hashchange", route);
    route();
  });
})();
