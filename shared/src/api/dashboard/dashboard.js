"use strict";
(function () {
  // The API key lives in this tab's session storage only: never in a URL, a cookie or local storage.
  var STORE = "stepper.apiKey";
  var HEADER = document.body.getAttribute("data-key-header") || "x-api-key";
  var HORIZON_MS = 3600 * 1000;
  var REFRESH_MS = 5000;
  var timer = null;
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function utc(iso) {
    var d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }
  function span(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m " + (s % 60) + "s";
    var h = Math.floor(m / 60);
    if (h < 48) return h + "h " + (m % 60) + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }
  function until(iso) {
    var left = new Date(iso).getTime() - Date.now();
    return utc(iso) + (left > 0 ? " (in " + span(left) + ")" : "");
  }
  function number(n) { return typeof n === "number" ? n.toLocaleString("en-US") : "—"; }
  function status(text, bad) { var s = $("status"); s.textContent = text; s.className = bad ? "err" : ""; }

  function key() { return sessionStorage.getItem(STORE); }

  function api(method, path) {
    var headers = {};
    headers[HEADER] = key();
    // Relative paths: the page works under an API Gateway stage prefix as well as at the root.
    return fetch(path, {
      method: method, headers: headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer"
    }).then(function (r) {
      return r.text().then(function (t) {
        var body = null;
        try { body = JSON.parse(t); } catch (e) { body = null; }
        if (r.status === 401) {
          sessionStorage.removeItem(STORE);
          ask("The key was refused. Enter another one.");
          throw new Error("unauthorised");
        }
        return { status: r.status, body: body };
      });
    });
  }

  function ask(note) {
    if (timer) { clearInterval(timer); timer = null; }
    $("board").hidden = true;
    $("refresh").hidden = true;
    $("forget").hidden = true;
    $("key-form").hidden = false;
    if (note) status(note, true);
    $("key").value = "";
    $("key").focus();
  }

  function open() {
    $("key-form").hidden = true;
    $("board").hidden = false;
    $("refresh").hidden = false;
    $("forget").hidden = false;
    load();
    if (!timer) timer = setInterval(load, REFRESH_MS);
  }

  function providerState(p) {
    if (p.enabled === false) return { word: "disabled", cls: "disabled", until: null };
    if (p.coolingDownUntil) {
      var word = p.lastErrorClass === "quota_exhausted" ? "exhausted" : "cooling";
      return { word: word, cls: word, until: p.coolingDownUntil };
    }
    return { word: "usable", cls: "usable", until: null };
  }

  function renderProviders(health) {
    var rows = clear($("provider-rows"));
    $("horizon").textContent = utc(new Date(Date.now() + HORIZON_MS).toISOString());
    (health.providers || []).forEach(function (p) {
      var st = providerState(p);
      var track = el("div", { cls: "track", "aria-hidden": "true" });
      if (st.cls !== "usable") {
        var seg = el("div", { cls: "seg " + st.cls });
        var end = st.until ? new Date(st.until).getTime() : Infinity;
        seg.style.width = Math.min(100, Math.max(1, (end - Date.now()) / HORIZON_MS * 100)) + "%";
        track.appendChild(seg);
      }
      var text = st.word;
      if (st.until) text += " until " + until(st.until);
      var state = el("span", { cls: "pstate" }, [el("span", { cls: "state-text", text: text })]);
      if (p.disabledReason) state.appendChild(el("span", { cls: "reason", text: p.disabledReason }));
      else if (p.lastErrorClass) state.appendChild(el("span", { cls: "reason", text: "last error: " + p.lastErrorClass }));
      if (typeof p.requestsLeftDay === "number") {
        state.appendChild(el("span", { cls: "reason", text: number(p.requestsLeftDay) + " requests left today" }));
      }
      rows.appendChild(el("div", {
        cls: "prow", "data-provider": p.name, "data-state": st.word, "data-until": st.until || ""
      }, [el("span", { cls: "pname", text: p.name }), track, state]));
    });
    if (health.store === "unavailable") rows.appendChild(el("p", { cls: "err", text: "The store did not answer: provider state unknown." }));
  }

  function outcomeClass(o) {
    return ["ok", "rate_limited", "quota_exhausted", "overloaded", "auth_invalid", "gone"].indexOf(o) >= 0 ? "o-" + o : "o-other";
  }

  function renderAttempts(overview) {
    var chart = clear($("attempt-chart"));
    $("day").textContent = "since " + utc(overview.day);
    var list = overview.attemptsToday || [];
    var max = list.reduce(function (m, p) { return Math.max(m, p.total); }, 0);
    var seen = {};
    if (!list.length) chart.appendChild(el("p", { cls: "hint", text: "No attempts yet today." }));
    list.forEach(function (p) {
      var bar = el("div", { cls: "bar", role: "img" });
      var parts = [];
      Object.keys(p.outcomes).forEach(function (o) {
        var n = p.outcomes[o];
        seen[o] = true;
        parts.push(o + " " + n);
        var seg = el("div", { cls: outcomeClass(o), title: o + ": " + n });
        seg.style.width = (n / max * 100) + "%";
        bar.appendChild(seg);
      });
      bar.setAttribute("aria-label", p.provider + ": " + parts.join(", "));
      chart.appendChild(el("div", { cls: "arow", "data-provider": p.provider }, [
        el("span", { cls: "pname", text: p.provider }), bar,
        el("span", { cls: "acount", text: p.total + (p.total === 1 ? " attempt: " : " attempts: ") + parts.join(", ") })
      ]));
    });
    var legend = clear($("attempt-legend"));
    Object.keys(seen).sort().forEach(function (o) {
      legend.appendChild(el("span", { cls: "sw " + outcomeClass(o) }));
      legend.appendChild(document.createTextNode(" " + o + "  "));
    });
  }

  function eta(job) {
    // etaAt / etaSeconds: present on unfinished jobs once the service estimates them.
    if (job.etaAt) return "ETA " + until(job.etaAt);
    if (typeof job.etaSeconds === "number") return "ETA in " + span(job.etaSeconds * 1000);
    return "—";
  }

  function renderJobs(overview) {
    var c = overview.counts;
    var dl = clear($("job-counts"));
    [["waiting", c.waiting], ["active", c.active], ["delayed", c.delayed], ["completed today", c.completedToday],
     ["failed today", c.failedToday], ["dead-lettered", c.deadLettered]].forEach(function (pair) {
      dl.appendChild(el("div", { "data-count": pair[0] }, [el("dt", { text: pair[0] }), el("dd", { text: number(pair[1]) })]));
    });
    $("counted").textContent = overview.counted < overview.unfinished
      ? "States counted over the oldest " + number(overview.counted) + " of " + number(overview.unfinished) + " unfinished jobs."
      : number(overview.unfinished) + " unfinished jobs.";
    // Unfinished jobs by tenant (tenantId, else userId; none: the key's own share), over the counted ones.
    var tenants = clear($("tenants").tBodies[0]);
    if (!(overview.tenants || []).length) tenants.appendChild(el("tr", {}, [el("td", { colspan: "3", cls: "hint", text: "No unfinished job." })]));
    (overview.tenants || []).forEach(function (t) {
      tenants.appendChild(el("tr", { "data-tenant": t.tenantId || "" }, [
        el("td", {}, t.tenantId ? [el("code", { text: t.tenantId })] : [el("span", { cls: "hint", text: "(none named)" })]),
        el("td", { text: number(t.unfinished) }),
        el("td", { text: number(t.active) })
      ]));
    });
    var body = clear($("oldest").tBodies[0]);
    if (!overview.oldest.length) body.appendChild(el("tr", {}, [el("td", { colspan: "6", cls: "hint", text: "No unfinished job." })]));
    overview.oldest.forEach(function (job) {
      var last = job.attempts.length ? job.attempts[job.attempts.length - 1] : null;
      body.appendChild(el("tr", { "data-job": job.id, "data-status": job.rawStatus }, [
        el("td", {}, [el("code", { text: job.id })]),
        el("td", { cls: "jstatus", text: job.rawStatus }),
        el("td", { text: utc(job.createdAt) + " (" + span(Date.now() - new Date(job.createdAt).getTime()) + " ago)" }),
        el("td", { text: job.nextAttemptAt ? until(job.nextAttemptAt) : "—" }),
        el("td", { cls: "eta", text: eta(job) }),
        el("td", { text: job.attempts.length + (last ? " (last: " + last.provider + " " + (last.errorCode || "ok") + ")" : "") })
      ]));
    });
  }

  function redeliver(button, id, note) {
    button.disabled = true;
    note.textContent = "sending…";
    api("POST", "v1/jobs/" + encodeURIComponent(id) + "/deliveries/redeliver").then(function (r) {
      if (r.status === 202) {
        note.textContent = "Redelivered: " + r.body.redelivered + " sent again";
        note.className = "note redelivered";
        setTimeout(load, 1500);
      } else {
        note.textContent = (r.body && (r.body.message || r.body.error)) || ("answered " + r.status);
        note.className = "note err";
        button.disabled = false;
      }
    }).catch(function (e) { note.textContent = String(e.message || e); note.className = "note err"; button.disabled = false; });
  }

  function renderDead(overview) {
    var body = clear($("dead-letters").tBodies[0]);
    if (!overview.deadLetters.length) body.appendChild(el("tr", {}, [el("td", { colspan: "5", cls: "hint", text: "No dead letter." })]));
    overview.deadLetters.forEach(function (job) {
      (job.deliveries || []).filter(function (d) { return d.status === "dead"; }).forEach(function (d, i) {
        var note = el("span", { cls: "note" });
        var button = el("button", { type: "button", cls: "redeliver", text: "Redeliver" });
        button.addEventListener("click", function () { redeliver(button, job.id, note); });
        var last = (d.lastStatus ? "HTTP " + d.lastStatus : "") + (d.lastError ? (d.lastStatus ? ": " : "") + d.lastError : "");
        body.appendChild(el("tr", { "data-job": job.id, "data-webhook": d.webhookId }, [
          el("td", {}, [el("code", { text: job.id })]),
          el("td", { text: d.kind + " → " + d.target }),
          el("td", { text: String(d.attempts) }),
          el("td", { text: last || "—" }),
          el("td", {}, i === 0 ? [button, note] : [])
        ]));
      });
    });
  }

  function renderBudget(r) {
    var box = clear($("budget-body"));
    if (r.status === 404) { box.appendChild(el("p", { cls: "hint", text: "budget not available" })); return; }
    if (r.status !== 200 || !r.body || !r.body.projection) {
      box.appendChild(el("p", { cls: "err", text: "budget: answered " + r.status })); return;
    }
    var p = r.body.projection;
    var table = el("table", { id: "budget-table" }, [el("thead", {}, [el("tr", {}, ["resource", "spent", "projected", "free tier", "runs out"].map(function (h) { return el("th", { text: h }); }))])]);
    var tb = el("tbody");
    ["storeCommands", "lambdaInvocations", "sqsRequests"].forEach(function (k) {
      var x = p[k];
      if (!x) return;
      tb.appendChild(el("tr", { "data-resource": k }, [el("td", { text: k }), el("td", { text: number(x.spent) }),
        el("td", { text: number(x.projected) }), el("td", { text: number(x.freeTier) }),
        el("td", { text: x.runsOutAt ? utc(x.runsOutAt) : "not this month" })]));
    });
    table.appendChild(tb);
    box.appendChild(el("p", { text: "Month " + (p.month || "") + (r.body.scope ? " · scope " + r.body.scope : "") }));
    box.appendChild(table);
    box.appendChild(el("p", { cls: "first-runs-out", text: p.firstRunsOut
      ? "First to run out: " + p.firstRunsOut.resource + " at " + utc(p.firstRunsOut.at)
      : "Nothing runs out this month at this pace." }));
  }

  function load() {
    if (!key()) { ask(); return; }
    status("loading…");
    Promise.all([api("GET", "v1/providers"), api("GET", "v1/jobs"), api("GET", "v1/budget")]).then(function (all) {
      var providers = all[0], overview = all[1];
      if (providers.status === 200 && providers.body) renderProviders(providers.body);
      if (overview.status === 200 && overview.body) {
        renderAttempts(overview.body);
        renderJobs(overview.body);
        renderDead(overview.body);
      }
      renderBudget(all[2]);
      var bad = [providers, overview].filter(function (r) { return r.status !== 200; });
      if (bad.length) status("answered " + bad.map(function (r) { return r.status + " " + ((r.body && r.body.code) || ""); }).join(", "), true);
      else status("updated " + utc(new Date().toISOString()));
    }).catch(function (e) {
      if (e && e.message === "unauthorised") return;
      status("could not load: " + (e && e.message ? e.message : e), true);
    });
  }

  $("key-header-name").textContent = HEADER;
  $("key-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var value = $("key").value.trim();
    $("key").value = "";
    if (!value) return;
    sessionStorage.setItem(STORE, value);
    status("");
    open();
  });
  $("refresh").addEventListener("click", load);
  $("forget").addEventListener("click", function () { sessionStorage.removeItem(STORE); ask("Key forgotten."); });
  if (key()) open(); else ask();
})();
