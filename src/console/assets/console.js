// The ferroserve console's own script. htmx loads the server-rendered fragments;
// this file adds the token, the management actions (through the same REST
// endpoints as any client), the upload with its progress bar, the "try it" form,
// the live charts (uPlot) and the confusion-matrix chart.
(function () {
  "use strict";

  // ---- the token, kept for this browser tab only ----

  var TOKEN_KEY = "ferroserve-token";

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (e) {
      return "";
    }
  }

  function withToken(headers) {
    var t = token();
    if (t) headers["Authorization"] = "Bearer " + t;
    return headers;
  }

  function el(id) {
    return document.getElementById(id);
  }

  function say(text, isError) {
    var status = el("status");
    if (!status) return;
    status.textContent = text;
    status.className = "status" + (isError ? " status-error" : "");
  }

  function askForToken(why) {
    var form = el("token-form");
    if (!form) return;
    var wasHidden = form.hidden;
    form.hidden = false;
    var hint = el("token-hint");
    if (hint && why) hint.textContent = why;
    if (wasHidden) el("token-input").focus();
  }

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  // Whether an answer is a console fragment: HTML from a /console/fragments/ route
  // of this server (after redirects; `raw.url` is the URL the browser fetched, its
  // `../` resolved). Only those are put into the page as HTML: a JSON answer holds
  // text that clients wrote (the prediction log, error messages), and as HTML its
  // markup would run with the token in reach.
  function isFragment(response) {
    var type = (response.headers.get("content-type") || "").toLowerCase();
    if (type.indexOf("text/html") !== 0) return false;
    try {
      var url = new URL(response.raw.url);
      return url.origin === window.location.origin && url.pathname.indexOf("/console/fragments/") === 0;
    } catch (e) {
      return false;
    }
  }

  // Every htmx request carries the token; a 401 asks for one, a JSON error (the
  // access layer's) is shown as text, and any other answer that is no console
  // fragment is not swapped in at all.
  document.addEventListener("htmx:config:request", function (evt) {
    var ctx = evt.detail.ctx;
    var source = ctx.sourceElement;
    // A finished job no longer changes: stop polling it.
    if (source && source.querySelector && source.querySelector('[data-finished="true"]')) {
      evt.preventDefault();
      return;
    }
    withToken(ctx.request.headers);
  });

  document.addEventListener("htmx:after:request", function (evt) {
    var ctx = evt.detail.ctx;
    var status = ctx.response && ctx.response.status;
    if (status === 401) {
      evt.preventDefault();
      askForToken(token() ? "That token was not accepted; enter another." : "This server asks for a token; it stays in this browser tab only.");
      if (ctx.target) ctx.target.innerHTML = '<p class="error" role="alert">A token is needed to see this.</p>';
      return;
    }
    if (!ctx.response || isFragment(ctx.response)) return;
    evt.preventDefault();
    var type = ctx.response.headers.get("content-type") || "";
    var message;
    if (status >= 400 && type.indexOf("application/json") === 0) {
      message = ctx.text;
      try {
        message = JSON.parse(ctx.text).error || message;
      } catch (e) { /* keep the text */ }
    } else {
      message = "The server's answer (HTTP " + status + ", " + (type || "no type") +
        ") is not part of the console; it is not shown.";
    }
    if (ctx.target) ctx.target.innerHTML = '<p class="error" role="alert">' + escapeHtml(message) + "</p>";
  });

  document.addEventListener("htmx:after:swap", function () {
    drawConfusionMatrices();
  });

  // fetch() with the token; answers {ok, status, data, ms}.
  function call(method, url, body) {
    var headers = withToken({ Accept: "application/json" });
    var init = { method: method, headers: headers, credentials: "same-origin" };
    if (body instanceof FormData) {
      // The browser writes the multipart Content-Type with its boundary.
      init.body = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    var started = performance.now();
    return fetch(url, init).then(function (response) {
      var ms = performance.now() - started;
      return response.text().then(function (text) {
        var data = text;
        try {
          data = JSON.parse(text);
        } catch (e) { /* not JSON */ }
        if (response.status === 401) askForToken("This needs a token.");
        return { ok: response.ok, status: response.status, data: data, ms: ms };
      });
    });
  }

  function errorText(answer) {
    var d = answer.data;
    return "HTTP " + answer.status + ": " + (d && d.error ? d.error : typeof d === "string" ? d : JSON.stringify(d));
  }

  function show(id, text, isError) {
    var out = el(id);
    if (out) {
      out.textContent = text;
      out.className = "result" + (isError ? " error" : " ok");
    }
    say(text, isError);
  }

  // ---- management actions ----

  var ACTIONS = {
    reload: function (b) {
      var m = b.dataset.model;
      return { question: "Reload model " + m + " from storage?", method: "POST", url: "/reload_model?modelname=" + encodeURIComponent(m) };
    },
    stop: function (b) {
      var m = b.dataset.model;
      return { question: "Stop serving model " + m + "? Requests to it fail until it is deployed or reloaded.", method: "POST", url: "/stop_deployment/" + encodeURIComponent(m) };
    },
    "delete": function (b) {
      var m = b.dataset.model;
      return { question: "Delete model " + m + " and all its versions from storage? This cannot be undone.", method: "DELETE", url: "/delete_model/" + encodeURIComponent(m), after: "/console" };
    },
    "cancel-job": function (b) {
      var j = b.dataset.job;
      return { question: "Cancel job " + j + "?", method: "POST", url: "/v1/jobs/" + encodeURIComponent(j) + "/cancel" };
    }
  };

  document.addEventListener("click", function (evt) {
    var button = evt.target.closest && evt.target.closest("button[data-action]");
    if (!button) return;
    var make = ACTIONS[button.dataset.action];
    if (!make) return;
    var action = make(button);
    if (!window.confirm(action.question)) return;
    button.disabled = true;
    call(action.method, action.url).then(function (answer) {
      button.disabled = false;
      if (answer.ok) {
        show("manage-result", (answer.data && answer.data.message) || "Done.", false);
        if (action.after) window.location.assign(action.after);
      } else {
        show("manage-result", errorText(answer), true);
      }
    }, function (e) {
      button.disabled = false;
      show("manage-result", "Request failed: " + e, true);
    });
  });

  function onDeploy(form, evt) {
    evt.preventDefault();
    var model = form.dataset.model;
    var value = function (name) {
      var v = form.elements[name].value.trim();
      return v === "" ? undefined : v;
    };
    var resources = {};
    if (value("timeout") !== undefined) resources.timeout = Number(value("timeout"));
    if (value("cpu_limit") !== undefined) resources.cpu_limit = value("cpu_limit");
    if (value("memory_limit") !== undefined) resources.memory_limit = value("memory_limit");
    var body = { model_id: model, resources: resources };
    if (value("environment") !== undefined) body.environment = value("environment");
    if (!window.confirm("Deploy model " + model + " with these settings?")) return;
    call("POST", "/deploy", body).then(function (answer) {
      show("manage-result", answer.ok ? (answer.data.message || "Deployed.") : errorText(answer), !answer.ok);
    });
  }

  // ---- upload with a progress bar ----

  function onUpload(form, evt) {
    evt.preventDefault();
    var file = el("upload-file").files[0];
    if (!file) return;
    var data = new FormData();
    // The server wants model_id and version before the file.
    var model = el("upload-model").value.trim();
    var version = el("upload-version").value.trim();
    if (model) data.append("model_id", model);
    if (version) data.append("version", version);
    data.append("file", file, file.name);
    var progress = el("upload-progress");
    progress.value = 0;
    progress.textContent = "0%";
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/upload_model");
    var headers = withToken({ Accept: "application/json" });
    Object.keys(headers).forEach(function (k) {
      xhr.setRequestHeader(k, headers[k]);
    });
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        var p = Math.round((100 * e.loaded) / e.total);
        progress.value = p;
        progress.textContent = p + "%";
      }
    });
    var submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    show("upload-result", "Uploading " + file.name + "…", false);
    xhr.addEventListener("loadend", function () {
      submit.disabled = false;
      var answer = { ok: xhr.status >= 200 && xhr.status < 300, status: xhr.status, data: xhr.responseText };
      try {
        answer.data = JSON.parse(xhr.responseText);
      } catch (e) { /* keep text */ }
      if (xhr.status === 401) askForToken("Uploading needs a token.");
      if (xhr.status === 0) {
        show("upload-result", "The upload failed: the connection was closed.", true);
      } else if (answer.ok) {
        progress.value = 100;
        show("upload-result", answer.data.message, false);
      } else {
        show("upload-result", errorText(answer), true);
      }
    });
    xhr.send(data);
  }

  // ---- "try it" ----

  function onTry(form, evt) {
    evt.preventDefault();
    var model = form.dataset.model;
    var mode = form.dataset.mode;
    var fields = Array.prototype.slice.call(form.querySelectorAll("[data-feature]"));
    var valueOf = function (f) {
      return f.dataset.kind === "number" ? Number(f.value) : f.value;
    };
    var body;
    if (mode === "image") {
      // The simple API's multipart form: model_id, then the image file.
      body = new FormData();
      body.append("model_id", model);
      body.append("image", fields[0].files[0]);
    } else if (mode === "text") {
      body = { text: fields[0].value };
    } else if (mode === "positional") {
      body = { features: fields.map(valueOf) };
    } else if (mode === "named") {
      var named = {};
      fields.forEach(function (f) {
        named[f.dataset.feature] = valueOf(f);
      });
      body = { features: named };
    } else {
      body = {
        features: fields[0].value.split(",").map(function (v) {
          v = v.trim();
          return v !== "" && !isNaN(Number(v)) ? Number(v) : v;
        })
      };
    }
    var out = el("try-result");
    out.textContent = "Predicting…";
    call("POST", "/predict/" + encodeURIComponent(model), body).then(function (answer) {
      if (!answer.ok) {
        out.className = "result error";
        out.textContent = errorText(answer);
        return;
      }
      var d = answer.data;
      var html = '<p>Prediction: <strong id="try-prediction">' + escapeHtml(JSON.stringify(d.prediction)) + "</strong>" +
        " (version " + escapeHtml(d.version) + ")</p>";
      if (Array.isArray(d.probabilities)) {
        var classes = d.classes || d.probabilities.map(function (_, i) { return i; });
        html += '<table class="probabilities"><caption>Probabilities</caption><thead><tr>';
        classes.forEach(function (c) { html += '<th scope="col">' + escapeHtml(c) + "</th>"; });
        html += "</tr></thead><tbody><tr>";
        d.probabilities.forEach(function (p) { html += "<td>" + (typeof p === "number" ? p.toFixed(4) : escapeHtml(JSON.stringify(p))) + "</td>"; });
        html += "</tr></tbody></table>";
      }
      html += '<p class="muted" id="try-latency">Latency: ' +
        (typeof d.latency === "number" ? "server " + (d.latency * 1000).toFixed(2) + " ms · " : "") +
        "round trip " + answer.ms.toFixed(1) + " ms</p>";
      out.className = "result ok";
      out.innerHTML = html;
    }, function (e) {
      out.className = "result error";
      out.textContent = "Request failed: " + e;
    });
  }

  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    if (form.id === "token-form") {
      evt.preventDefault();
      var value = el("token-input").value.trim();
      if (!value) return;
      try {
        sessionStorage.setItem(TOKEN_KEY, value);
      } catch (e) { /* private mode: the token lasts this page only */ }
      window.location.reload();
    } else if (form.id === "upload-form") {
      onUpload(form, evt);
    } else if (form.id === "try-form") {
      onTry(form, evt);
    } else if (form.id === "deploy-form") {
      onDeploy(form, evt);
    }
  });

  // ---- live charts ----

  var WINDOW = 120; // samples kept (two minutes at one a second)

  // The q-quantile of the requests in the bucket differences, in milliseconds,
  // interpolated inside the bucket as Prometheus' histogram_quantile does.
  function quantileMs(prevBuckets, buckets, q) {
    var before = {};
    (prevBuckets || []).forEach(function (b) { before[b[0] === null ? "inf" : b[0]] = b[1]; });
    var deltas = buckets.map(function (b) {
      var key = b[0] === null ? "inf" : b[0];
      return [b[0] === null ? Infinity : b[0], Math.max(0, b[1] - (before[key] || 0))];
    });
    var total = deltas.length ? deltas[deltas.length - 1][1] : 0;
    if (total <= 0) return null;
    var rank = q * total;
    var lower = 0, below = 0;
    for (var i = 0; i < deltas.length; i++) {
      var bound = deltas[i][0], cumulative = deltas[i][1];
      if (cumulative >= rank) {
        if (!isFinite(bound)) return lower * 1000;
        var inBucket = cumulative - below;
        var fraction = inBucket > 0 ? (rank - below) / inBucket : 1;
        return (lower + (bound - lower) * fraction) * 1000;
      }
      lower = bound;
      below = cumulative;
    }
    return lower * 1000;
  }

  function makeChart(id, series) {
    var target = el(id);
    var opts = {
      width: Math.max(260, target.clientWidth || 400),
      height: 170,
      series: [{}].concat(series.map(function (s) {
        return { label: s[0], stroke: s[1], width: 2, spanGaps: false };
      })),
      // The x axis always spans the last WINDOW seconds, from the first sample on.
      scales: { x: { time: true, range: function (u, min, max) { return max == null ? [0, 1] : [max - WINDOW, max]; } } },
      axes: [{}, { size: 50 }],
      legend: { live: false }
    };
    var data = [[]].concat(series.map(function () { return []; }));
    return { plot: new uPlot(opts, data, target), data: data };
  }

  function push(chart, x, values) {
    chart.data[0].push(x);
    values.forEach(function (v, i) { chart.data[i + 1].push(v); });
    if (chart.data[0].length > WINDOW) chart.data.forEach(function (s) { s.shift(); });
    chart.plot.setData(chart.data);
  }

  function startCharts(box) {
    if (typeof uPlot === "undefined") return;
    var model = box.dataset.model;
    var charts = {
      rate: makeChart("chart-rate", [["requests/s", "#1f6feb"], ["errors/s", "#cf222e"]]),
      latency: makeChart("chart-latency", [["p50 ms", "#1a7f37"], ["p99 ms", "#9a6700"]]),
      queue: makeChart("chart-queue", [["queued", "#8250df"]]),
      batch: makeChart("chart-batch", [["rows per run", "#bc4c00"]])
    };
    var previous = null;
    var stopped = false;
    function tick() {
      if (stopped) return;
      call("GET", "/console/api/models/" + encodeURIComponent(model) + "/metrics").then(function (answer) {
        if (!answer.ok) {
          el("charts-now").textContent = "Metrics unavailable: " + errorText(answer);
          if (answer.status === 401) stopped = true;
          return;
        }
        var m = answer.data;
        if (previous && m.at_ms > previous.at_ms) {
          var seconds = (m.at_ms - previous.at_ms) / 1000;
          var x = m.at_ms / 1000;
          var requests = Math.max(0, m.requests_total - previous.requests_total) / seconds;
          var errors = Math.max(0, m.errors_total - previous.errors_total) / seconds;
          var p50 = quantileMs(previous.latency_seconds.buckets, m.latency_seconds.buckets, 0.5);
          var p99 = quantileMs(previous.latency_seconds.buckets, m.latency_seconds.buckets, 0.99);
          var runs = m.batch_size.count - previous.batch_size.count;
          var batch = runs > 0 ? (m.batch_size.sum - previous.batch_size.sum) / runs : null;
          push(charts.rate, x, [requests, errors]);
          push(charts.latency, x, [p50, p99]);
          push(charts.queue, x, [m.queue_length]);
          push(charts.batch, x, [batch]);
          el("charts-now").textContent = "Now: " + requests.toFixed(1) + " requests/s, " + errors.toFixed(1) +
            " errors/s, p50 " + (p50 === null ? "—" : p50.toFixed(2) + " ms") + ", p99 " +
            (p99 === null ? "—" : p99.toFixed(2) + " ms") + ", queue " + m.queue_length +
            "; totals since start: " + m.requests_total + " requests, " + m.errors_total + " errors.";
        }
        previous = m;
      }).finally(function () {
        setTimeout(tick, 1000);
      });
    }
    tick();
  }

  // ---- confusion matrix ----

  function drawConfusionMatrices() {
    var canvases = document.querySelectorAll("canvas.confusion-chart");
    Array.prototype.forEach.call(canvases, function (canvas) {
      var matrix, classes;
      try {
        matrix = JSON.parse(canvas.dataset.matrix);
        classes = JSON.parse(canvas.dataset.classes);
      } catch (e) {
        return;
      }
      var n = matrix.length;
      if (!n) return;
      var g = canvas.getContext("2d");
      var margin = 84, size = Math.min(canvas.width, canvas.height) - margin;
      var cell = size / n;
      var max = 1;
      matrix.forEach(function (row) { row.forEach(function (v) { max = Math.max(max, v); }); });
      g.clearRect(0, 0, canvas.width, canvas.height);
      g.font = "12px sans-serif";
      g.textAlign = "center";
      g.textBaseline = "middle";
      for (var r = 0; r < n; r++) {
        for (var c = 0; c < n; c++) {
          var v = matrix[r][c], shade = v / max;
          g.fillStyle = r === c ? "rgba(26,127,55," + (0.1 + 0.9 * shade) + ")" : "rgba(207,34,46," + (0.05 + 0.95 * shade) + ")";
          g.fillRect(margin + c * cell, margin + r * cell, cell - 1, cell - 1);
          g.fillStyle = shade > 0.5 ? "#fff" : "#111";
          g.fillText(String(v), margin + (c + 0.5) * cell, margin + (r + 0.5) * cell);
        }
        g.fillStyle = "#111";
        g.textAlign = "right";
        g.fillText(String(classes[r]).slice(0, 11), margin - 6, margin + (r + 0.5) * cell);
        g.textAlign = "center";
        g.fillText(String(classes[r]).slice(0, 11), margin + (r + 0.5) * cell, margin - 12);
      }
      g.fillText("predicted →", margin + size / 2, 12);
    });
  }

  // ---- start ----

  document.addEventListener("DOMContentLoaded", function () {
    var forget = el("token-forget");
    if (token() && forget) {
      forget.hidden = false;
      forget.addEventListener("click", function () {
        try {
          sessionStorage.removeItem(TOKEN_KEY);
        } catch (e) { /* nothing kept */ }
        window.location.reload();
      });
    }
    var charts = el("charts");
    if (charts) startCharts(charts);
  });
})();
