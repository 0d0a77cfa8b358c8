"""The HTML view's page: markup, style and script, all inline (the page loads nothing).

``$TITLE`` (HTML-escaped) and ``$DATA`` (JSON with ``<``, ``>``, ``&`` escaped) are filled
in by :func:`archcomp.backends.graphviz.view.view_html`. The script reads the data with
``JSON.parse``, parses each figure with ``DOMParser`` as SVG (never as HTML) and sets every
text with ``textContent``.

Test hook:
``FILE.html#test=expand:BLOCK,click:BOX,frame:REPEAT,close:BLOCK,hover:NODE,search:TEXT,all,home``
runs those steps after loading and writes what it saw (the state, the boxes drawn, the details
shown, uncaught errors) as JSON into ``<pre id="archcomp-test">``.
"""

from __future__ import annotations

STYLE = """
html,body{margin:0;height:100%;font:13px Helvetica,Arial,sans-serif;color:#222}
#bar{position:fixed;top:0;left:0;right:0;height:36px;display:flex;gap:6px;align-items:center;
 padding:0 8px;background:#f4f4f4;border-bottom:1px solid #ccc;box-sizing:border-box}
#bar button{min-width:28px}
#status{color:#666;margin-left:8px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
#stage{position:fixed;top:36px;left:0;right:340px;bottom:0;overflow:hidden;cursor:grab;
 background:#fff;touch-action:none}
#stage.dragging{cursor:grabbing}
#canvas{transform-origin:0 0;position:absolute;left:0;top:0}
#panel{position:fixed;top:36px;right:0;width:340px;bottom:0;overflow:auto;padding:8px;
 border-left:1px solid #ccc;box-sizing:border-box;background:#fafafa}
#panel h2{font-size:15px;margin:4px 0 8px}
#panel table{border-collapse:collapse;width:100%}
#panel td{vertical-align:top;padding:2px 4px;border-bottom:1px solid #eee;word-break:break-all}
#panel td.k{color:#666;white-space:nowrap;word-break:normal}
.hint{color:#666}
g.node{cursor:pointer}
g.node.expandable>path,g.node.expandable>polygon{stroke-width:2.2}
g.node.hit>path,g.node.hit>polygon,g.node.hit>ellipse{stroke:#d62728;stroke-width:3}
g.node.sel>path,g.node.sel>polygon,g.node.sel>ellipse{stroke:#1f77b4;stroke-width:3}
g.cluster.closable>path,g.cluster.closable>polygon{pointer-events:all;cursor:zoom-out}
g.cluster.closable>text{cursor:zoom-out}
g.cluster.unfolds>path,g.cluster.unfolds>polygon{pointer-events:all;cursor:zoom-in}
g.cluster.unfolds>text{cursor:zoom-in}
#archcomp-test{display:none}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var errors = [];
  window.addEventListener("error", function (e) { errors.push(String(e.message)); });
  var D = JSON.parse(document.getElementById("archcomp-data").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var stage = $("stage"), canvas = $("canvas"), details = $("details"), status = $("status");
  var byKey = {};
  D.states.forEach(function (s, i) { byKey[s.key.join("\n")] = i; });
  var cur = -1, svg = null, tx = 0, ty = 0, sc = 1, hits = [], hitAt = -1, pinned = null;
  $("title").textContent = D.name;
  document.title = D.name + " \u00b7 archcomp view";

  function say(t) { status.textContent = t || ""; }
  function apply() {
    canvas.style.transform = "translate(" + tx + "px," + ty + "px) scale(" + sc + ")";
  }
  function entries(kind) { return D.states[cur][kind]; }
  function elOf(id) { return svg ? svg.querySelector("#" + id) : null; }

  function show(i) {
    var doc = new DOMParser().parseFromString(D.states[i].svg, "image/svg+xml");
    var root = doc.documentElement;
    if (root.nodeName !== "svg") { say("this figure could not be read"); return; }
    root.querySelectorAll("script,foreignObject").forEach(function (x) { x.remove(); });
    var el = document.importNode(root, true);
    canvas.textContent = "";
    canvas.appendChild(el);
    svg = el; cur = i; hits = []; hitAt = -1; pinned = null;
    var s = D.states[i];
    el.querySelectorAll("g.node").forEach(function (g) {
      var b = s.boxes[g.id];
      if (b && b.opens !== null && s.key[0] !== "*") { g.classList.add("expandable"); }
    });
    el.querySelectorAll("g.cluster").forEach(function (g) {
      var f = s.frames[g.id];
      if (f && f.collapse) { g.classList.add("closable"); }
      else if (f && f.copies) { g.classList.add("unfolds"); }
    });
    say(s.key[0] === "*" ? "every block open" :
        s.key.length ? "open: " + s.key.join(", ") : "");
  }

  function centre(el) {
    var r = el.getBoundingClientRect(), st = stage.getBoundingClientRect();
    return { x: r.left + r.width / 2 - st.left, y: r.top + r.height / 2 - st.top };
  }
  function anchorEl(a) {
    // the box or frame drawn for ``a``, else for the nearest enclosing name ("layers.0" ->
    // "layers": a repeated block's copy opens into its repeat's frame)
    var kinds = ["boxes", "frames"];
    while (a) {
      for (var k = 0; k < 2; k++) {
        var m = entries(kinds[k]);
        for (var id in m) { if (m[id].anchor === a) { var e = elOf(id); if (e) { return e; } } }
      }
      a = a.indexOf(".") >= 0 ? a.slice(0, a.lastIndexOf(".")) : "";
    }
    return null;
  }
  function fit() {
    if (!svg) { return; }
    sc = 1; tx = 0; ty = 0; apply();
    var r = svg.getBoundingClientRect(), st = stage.getBoundingClientRect();
    sc = Math.min(st.width / r.width, st.height / r.height, 1.5) * 0.95;
    tx = (st.width - r.width * sc) / 2; ty = (st.height - r.height * sc) / 2;
    apply();
  }
  function zoom(k, mx, my) {
    var st = stage.getBoundingClientRect();
    if (mx === undefined) { mx = st.width / 2; my = st.height / 2; }
    var n = Math.max(0.02, Math.min(8, sc * k));
    tx = mx - (mx - tx) * n / sc; ty = my - (my - ty) * n / sc; sc = n; apply();
  }
  function go(key, anchor) {
    var i = byKey[key.join("\n")];
    if (i === undefined) {
      say("that view is not in this page (it holds " + D.states.length + " of them, at most " +
          D.limit + "): draw it with archcomp draw --expand");
      return false;
    }
    var before = anchor ? anchorEl(anchor) : null;
    var p = before ? centre(before) : null;
    show(i);
    var after = anchor ? anchorEl(anchor) : null;
    if (p && after) {
      var q = centre(after); tx += p.x - q.x; ty += p.y - q.y; apply();
    } else { fit(); }
    return true;
  }
  function expand(name, anchor) {
    var key = D.states[cur].key;
    if (key[0] === "*" || key.indexOf(name) >= 0) { return false; }
    return go(key.concat([name]).sort(), anchor);
  }
  function collapse(names, anchor) {
    // the state without ``names``; else the largest held state within it (what was opened
    // inside the closed block closes with it)
    var want = D.states[cur].key.filter(function (k) { return names.indexOf(k) < 0; });
    var best = null;
    D.states.forEach(function (s) {
      if (s.key[0] === "*") { return; }
      var inside = s.key.every(function (k) { return want.indexOf(k) >= 0; });
      if (inside && (best === null || s.key.length > best.length)) { best = s.key; }
    });
    return go(best || want, anchor);
  }

  function row(t, k, v) {
    if (v === undefined || v === null || v === "") { return; }
    var tr = document.createElement("tr"), a = document.createElement("td"),
        b = document.createElement("td");
    a.className = "k"; a.textContent = k; b.textContent = String(v);
    tr.appendChild(a); tr.appendChild(b); t.appendChild(tr);
  }
  function detail(key) {
    details.textContent = "";
    var f = D.info[key];
    if (!f) { return; }
    var h = document.createElement("h2"), t = document.createElement("table");
    h.textContent = f.title;
    details.appendChild(h); details.appendChild(t);
    row(t, "name", f.name); row(t, "op", f.op);
    Object.keys(f.args || {}).forEach(function (k) { row(t, "  " + k, f.args[k]); });
    row(t, "shape", f.shape);
    row(t, "shape at " + (D.dims || "the dims"), f.shape_at);
    row(t, "parameters", f.params); row(t, "MACs", f.macs); row(t, "memory", f.memory);
    row(t, "activations", f.activations); row(t, "source", f.source);
    row(t, "drawn for", f.copies);
  }
  function boxOf(target) {
    var g = target && target.closest ? target.closest("g.node") : null;
    return g && entries("boxes")[g.id] ? g : null;
  }

  stage.addEventListener("mouseover", function (e) {
    var g = boxOf(e.target);
    if (g) { detail(entries("boxes")[g.id].info); }
  });
  stage.addEventListener("mouseout", function (e) {
    if (boxOf(e.target) && pinned) { detail(pinned); }
  });
  function click(target) {
    var g = boxOf(target);
    if (g) {
      var b = entries("boxes")[g.id];
      if (b.opens !== null && expand(b.opens, b.anchor)) { return; }
      svg.querySelectorAll("g.node.sel").forEach(function (x) { x.classList.remove("sel"); });
      g.classList.add("sel"); pinned = b.info; detail(b.info);
      return;
    }
    var c = target && target.closest ? target.closest("g.cluster") : null;
    var f = c ? entries("frames")[c.id] : null;
    if (f && f.collapse) { collapse(f.collapse, f.anchor); }
    else if (f && f.copies) { expand(f.copies, f.anchor); }
  }
  var down = null;
  stage.addEventListener("pointerdown", function (e) {
    down = { x: e.clientX, y: e.clientY, tx: tx, ty: ty, moved: false };
  });
  stage.addEventListener("pointermove", function (e) {
    if (!down) { return; }
    var dx = e.clientX - down.x, dy = e.clientY - down.y;
    if (!down.moved && Math.abs(dx) + Math.abs(dy) < 4) { return; }
    down.moved = true; stage.classList.add("dragging");
    tx = down.tx + dx; ty = down.ty + dy; apply();
  });
  stage.addEventListener("pointerup", function (e) {
    var d = down; down = null; stage.classList.remove("dragging");
    if (d && !d.moved) { click(e.target); }
  });
  stage.addEventListener("wheel", function (e) {
    e.preventDefault();
    var st = stage.getBoundingClientRect();
    zoom(Math.exp(-e.deltaY * 0.0015), e.clientX - st.left, e.clientY - st.top);
  }, { passive: false });
  $("zin").onclick = function () { zoom(1.25); };
  $("zout").onclick = function () { zoom(0.8); };
  $("fit").onclick = fit;
  $("home").onclick = function () { go(D.states[0].key); };
  $("all").onclick = function () { if (!go(["*"])) { say("every block open is too large"); } };

  function matches(state, q, own) {
    // own: the box is the node (its name or title holds q); else: q is a node it holds
    var out = [];
    Object.keys(state.boxes).forEach(function (id) {
      var b = state.boxes[id], f = D.info[b.info] || {};
      var names = own ? [f.name || "", f.title || ""] : b.names.concat([f.title || ""]);
      if (names.join("\n").toLowerCase().indexOf(q) >= 0) { out.push(id); }
    });
    return out;
  }
  function search(text) {
    if (svg) {
      svg.querySelectorAll("g.node.hit").forEach(function (x) { x.classList.remove("hit"); });
    }
    var q = text.trim().toLowerCase();
    hits = []; hitAt = -1;
    if (!q) { say(""); return; }
    var found = matches(D.states[cur], q, true);
    for (var i = 0; i < D.states.length && !found.length; i++) {  // the figure that draws it
      if (matches(D.states[i], q, true).length) {
        go(D.states[i].key); found = matches(D.states[cur], q, true);
      }
    }
    if (!found.length) { found = matches(D.states[cur], q, false); }  // the box holding it
    hits = found.map(elOf).filter(function (x) { return x; });
    hits.forEach(function (x) { x.classList.add("hit"); });
    say(hits.length ? hits.length + " found (Enter: next)" : "not found");
    next();
  }
  function next() {
    if (!hits.length) { return; }
    hitAt = (hitAt + 1) % hits.length;
    var g = hits[hitAt], p = centre(g), st = stage.getBoundingClientRect();
    tx += st.width / 2 - p.x; ty += st.height / 2 - p.y; apply();
    detail(entries("boxes")[g.id].info);
  }
  var box = $("search");
  box.addEventListener("input", function () { search(box.value); });
  box.addEventListener("keydown", function (e) { if (e.key === "Enter") { next(); } });

  go(D.states[0].key);
  var m = /^#test=(.*)$/.exec(location.hash);
  if (m) {
    var steps = [];
    decodeURIComponent(m[1]).split(",").forEach(function (step) {
      var kv = step.split(":"), op = kv[0], arg = kv.slice(1).join(":"), ok = false, extra = {};
      if (op === "expand") {
        var bs = entries("boxes");
        for (var id in bs) {
          if (bs[id].opens === arg) { ok = expand(arg, bs[id].anchor); break; }
        }
      } else if (op === "hover") {
        var all = entries("boxes");
        for (var id2 in all) {
          if (all[id2].names.indexOf(arg) >= 0) {
            elOf(id2).dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
            ok = true; break;
          }
        }
      } else if (op === "click") {  // a real click: pointer events on the box's shape
        var cs = entries("boxes");
        for (var cid in cs) {
          if (cs[cid].names[0] === arg) {
            var shape = elOf(cid).querySelector("path,polygon,ellipse") || elOf(cid);
            var before = centre(shape), anchor = cs[cid].anchor, was = cur;
            var at = { clientX: 0, clientY: 0, bubbles: true };
            var r = shape.getBoundingClientRect();
            at.clientX = r.left + r.width / 2; at.clientY = r.top + r.height / 2;
            shape.dispatchEvent(new PointerEvent("pointerdown", at));
            shape.dispatchEvent(new PointerEvent("pointerup", at));
            var after = anchorEl(anchor);
            ok = cur !== was && after !== null;
            if (after) {
              var q = centre(after);
              extra = { moved: Math.round(Math.abs(q.x - before.x) + Math.abs(q.y - before.y)) };
            }
            break;
          }
        }
      } else if (op === "close") {
        var fs = entries("frames");
        for (var fid in fs) {
          if ((fs[fid].collapse || []).indexOf(arg) >= 0) {
            ok = collapse(fs[fid].collapse, fs[fid].anchor); break;
          }
        }
      } else if (op === "frame") {  // a real click on a frame's background: its copies
        var ff = entries("frames");
        for (var fid2 in ff) {
          if (ff[fid2].anchor === arg) {
            var edge = elOf(fid2).querySelector("path,polygon");
            var fr = edge.getBoundingClientRect(), was2 = cur;
            var pt = { clientX: fr.left + 6, clientY: fr.top + fr.height / 2, bubbles: true };
            edge.dispatchEvent(new PointerEvent("pointerdown", pt));
            edge.dispatchEvent(new PointerEvent("pointerup", pt));
            ok = cur !== was2; break;
          }
        }
      } else if (op === "search") { search(arg); ok = hits.length > 0; }
      else if (op === "all") { ok = go(["*"]); }
      else if (op === "home") { ok = go(D.states[0].key); }
      steps.push({ step: step, ok: ok, state: D.states[cur].key, details: details.textContent,
                   boxes: Object.keys(entries("boxes")).length, extra: extra });
    });
    var shown = [];
    var bs2 = entries("boxes");
    Object.keys(bs2).forEach(function (id) { shown = shown.concat(bs2[id].names); });
    $("archcomp-test").textContent = JSON.stringify({
      errors: errors, steps: steps, state: D.states[cur].key, boxes: shown,
      details: details.textContent, states: D.states.length
    });
  }
})();
"""

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>$TITLE</title>
<style>{STYLE}</style>
</head>
<body>
<div id="bar">
<strong id="title"></strong>
<button id="zin" title="zoom in">+</button><button id="zout" title="zoom out">&#8722;</button>
<button id="fit" title="fit the figure to the window">fit</button>
<button id="home" title="the figure as drawn by default">default</button>
<button id="all" title="every block open">open all</button>
<input id="search" type="search" placeholder="find a node" size="18">
<span id="status"></span>
</div>
<div id="stage"><div id="canvas"></div></div>
<div id="panel">
<p class="hint">Hover or click a box for its details. Click a box drawn with a thick border to
open it in place; click inside an open block's frame (not on a box) to close it, inside a
closed repeat's "N&#215;" frame to show every copy (and again to fold them). Drag to pan,
wheel or +/&#8722; to zoom.</p>
<div id="details"></div>
</div>
<pre id="archcomp-test"></pre>
<script type="application/json" id="archcomp-data">$DATA</script>
<script>{SCRIPT}</script>
</body>
</html>
"""
