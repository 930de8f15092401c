/* Undersign operator console: live dashboard and overview. No framework, no third party.
 * Live counts come from the shared live-count client in widget.js (UndersignLive: one
 * event stream for every console tab, hosted page and widget of this browser); each count
 * refetches the admin stats and latest endorsements (at most once a second); polling every
 * 5 s is the fallback while the stream is down. Every request gives up after 10 s (12 s
 * for actions) with a message in the error area. Every value from the server is set as
 * text. */
(function () {
  'use strict';

  var NF = new Intl.NumberFormat('en');
  var SVGNS = 'http://www.w3.org/2000/svg';
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var CSRF = csrfMeta ? csrfMeta.getAttribute('content') : '';

  function $(sel, root) { return (root || document).querySelector(sel); }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  function pad(n) { return n < 10 ? '0' + n : '' + n; }
  var MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  function hm(d) { return pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()); }
  function dm(d) { return d.getUTCDate() + ' ' + MONTHS[d.getUTCMonth()]; }
  function stamp(iso) {
    var d = new Date(iso);
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) +
      ' ' + hm(d) + ':' + pad(d.getUTCSeconds());
  }

  var LIVE = window.UndersignLive;
  var READ_TIMEOUT = 10000;
  var ACTION_TIMEOUT = 12000;

  function api(url, options) {
    options = options || {};
    var post = options.method === 'POST';
    var headers = { Accept: 'application/json' };
    if (post) {
      headers['X-CSRF-Token'] = CSRF;
      headers['Content-Type'] = 'application/json';
    }
    /* No request waits forever: the answer, body included, must be in within the limit. */
    var limit = post ? ACTION_TIMEOUT : READ_TIMEOUT;
    var controller = window.AbortController ? new AbortController() : null;
    var timer = controller ? setTimeout(function () { controller.abort(); }, limit) : 0;
    return fetch(url, {
      method: options.method || 'GET',
      headers: headers,
      credentials: 'same-origin',
      cache: 'no-store',
      signal: controller ? controller.signal : undefined,
      body: options.body ? JSON.stringify(options.body) : undefined
    }).then(function (response) {
      if (response.status === 401) {
        window.location.assign('/admin/login?next=' + encodeURIComponent(window.location.pathname));
        throw new Error('Signed out');
      }
      return response.json().then(function (data) {
        if (!response.ok) throw new Error(data.detail || data.title || ('HTTP ' + response.status));
        return data;
      });
    }).then(function (data) {
      clearTimeout(timer);
      return data;
    }, function (err) {
      clearTimeout(timer);
      if (err && err.name === 'AbortError') {
        throw new Error('The server did not answer within ' + limit / 1000 + ' s. ' + (post
          ? 'The change may or may not have been made; doing it again is safe.'
          : 'Trying again shortly.'));
      }
      throw err;
    });
  }

  function setWidth(node, pct) { node.style.width = Math.max(0, Math.min(100, pct)) + '%'; }

  /* -- overview ----------------------------------------------------------------------- */
  function overview(root) {
    function paintCount(card, count, goal) {
      $('[data-count]', card).textContent = NF.format(count);
      setWidth($('[data-meter]', card), goal ? (100 * count) / goal : 0);
    }
    function paint(s, card) {
      paintCount(card, s.count, s.goal);
      var pill = $('[data-open]', card);
      pill.textContent = s.open ? 'Open' : 'Closed';
      pill.className = 'pill ' + (s.open ? 'ok' : 'off');
    }
    Array.prototype.forEach.call(root.querySelectorAll('[data-meter]'), function (m) {
      setWidth(m, Number(m.getAttribute('data-pct')) || 0);
    });
    /* Counts live, over the shared stream; open/closed (and the counts again) every 5 s. */
    if (LIVE) {
      Array.prototype.forEach.call(root.querySelectorAll('[data-id]'), function (card) {
        LIVE.watch(root.getAttribute('data-live-api'), card.getAttribute('data-id'), function (n) {
          if (typeof n === 'number') paintCount(card, n, Number(card.getAttribute('data-goal')));
        });
      });
    }
    function poll() {
      if (document.hidden) return;
      api(root.getAttribute('data-api')).then(function (data) {
        data.statements.forEach(function (s) {
          var card = root.querySelector('[data-id="' + CSS.escape(s.id) + '"]');
          if (card) paint(s, card);
        });
      }).catch(function () {});
    }
    setInterval(poll, 5000);
  }

  /* -- dashboard ---------------------------------------------------------------------- */
  function dashboard(root) {
    var id = root.getAttribute('data-id');
    var base = root.getAttribute('data-base');
    var statsUrl = root.getAttribute('data-stats');
    var entriesUrl = root.getAttribute('data-entries');
    var countEl = $('#count');
    var errorEl = $('#error');
    var live = $('#live');
    var liveText = $('#live-text');
    var moreBtn = $('#more');
    var toggle = $('#toggle-open');
    var range = 'minute';
    var stats = null;
    var shown = 25;
    var nextCursor = null;
    var knownIds = null;
    var lastRefresh = 0;
    var pending = null;
    var streamLive = false;
    var failed = false;

    function showError(message) {
      errorEl.textContent = message;
      errorEl.hidden = !message;
    }

    function setCount(n) {
      var text = NF.format(n);
      if (countEl.textContent !== text) {
        countEl.textContent = text;
        countEl.classList.add('bump');
        setTimeout(function () { countEl.classList.remove('bump'); }, 700);
      }
      var goal = Number(root.getAttribute('data-goal')) || 0;
      var progress = $('#progress');
      progress.setAttribute('aria-valuenow', String(n));
      setWidth($('#progress-bar'), goal ? (100 * n) / goal : 0);
      var pct = goal ? Math.floor((1000 * n) / goal) / 10 : 0;
      $('#progress-text').textContent = goal
        ? pct + '% of the goal · ' + NF.format(Math.max(0, goal - n)) + ' to go'
        : '';
    }

    function setOpen(open) {
      var pill = $('#open-pill');
      pill.textContent = open ? 'Open' : 'Closed';
      pill.className = 'pill ' + (open ? 'ok' : 'off');
      toggle.setAttribute('data-open', open ? 'true' : 'false');
      toggle.textContent = open ? 'Close for endorsements' : 'Reopen for endorsements';
    }

    function bars(table, data, label) {
      var body = $('tbody', table);
      var keys = Object.keys(data);
      var max = keys.reduce(function (m, k) { return Math.max(m, data[k]); }, 0);
      var total = keys.reduce(function (t, k) { return t + data[k]; }, 0);
      body.textContent = '';
      if (!keys.length) {
        var row = el('tr', { class: 'none' });
        row.appendChild(el('td', { colspan: '3' }, 'No endorsements yet.'));
        body.appendChild(row);
        return;
      }
      keys.slice(0, 12).forEach(function (k) {
        var tr = el('tr');
        var name = label(k);
        tr.appendChild(el('td', { title: name }, name));
        tr.appendChild(el('td', { class: 'num' }, NF.format(data[k])));
        var cell = el('td');
        var track = el('div', { class: 'track', 'aria-hidden': 'true' });
        var fill = el('span');
        setWidth(fill, max ? (100 * data[k]) / max : 0);
        track.appendChild(fill);
        cell.appendChild(track);
        cell.appendChild(el('span', { class: 'sr-only' }, Math.round((100 * data[k]) / total) + '%'));
        tr.appendChild(cell);
        body.appendChild(tr);
      });
      if (keys.length > 12) {
        var rest = keys.slice(12).reduce(function (t, k) { return t + data[k]; }, 0);
        var tr = el('tr', { class: 'none' });
        tr.appendChild(el('td', null, (keys.length - 12) + ' more'));
        tr.appendChild(el('td', { class: 'num' }, NF.format(rest)));
        tr.appendChild(el('td'));
        body.appendChild(tr);
      }
    }

    var regionNames = null;
    try { regionNames = new Intl.DisplayNames(['en'], { type: 'region' }); } catch (e) { regionNames = null; }
    function countryLabel(code) {
      var name = code;
      try { name = regionNames ? regionNames.of(code) : code; } catch (e) { name = code; }
      return name && name !== code ? name + ' (' + code + ')' : code;
    }
    function sourceLabel(s) { return s === 'direct' ? 'Hosted page (direct)' : s.replace(/^https?:\/\//, ''); }

    function niceMax(n) {
      /* four whole-number steps of 1, 2 or 5 x 10^k */
      var raw = Math.max(1, Math.ceil(n / 4));
      var mag = Math.pow(10, Math.floor(Math.log10(raw)));
      var step = [1, 2, 5, 10].map(function (f) { return f * mag; }).filter(function (v) { return v >= raw; })[0];
      return step * 4;
    }

    function chart() {
      var box = $('#chart');
      var series = stats ? stats.timeline[range] : [];
      var width = Math.max(280, box.clientWidth || 600);
      var height = 240;
      var m = { l: 40, r: 8, t: 10, b: 26 };
      var w = width - m.l - m.r;
      var h = height - m.t - m.b;
      var total = series.reduce(function (t, p) { return t + p[1]; }, 0);
      var node = svg('svg', {
        viewBox: '0 0 ' + width + ' ' + height, width: String(width), height: String(height),
        role: 'img', 'aria-label': NF.format(total) + ' endorsements in ' +
          { minute: 'the last hour, per minute', hour: 'the last 72 hours, per hour', day: 'all days, per day' }[range]
      });
      var max = niceMax(series.reduce(function (mx, p) { return Math.max(mx, p[1]); }, 0));
      for (var i = 0; i <= 4; i++) {
        var y = m.t + h - (h * i) / 4;
        node.appendChild(svg('line', { class: 'grid', x1: m.l, x2: width - m.r, y1: y, y2: y }));
        node.appendChild(svg('text', { class: 'axis', x: m.l - 8, y: y + 4, 'text-anchor': 'end' }, NF.format((max * i) / 4)));
      }
      if (!series.length || !total) {
        node.appendChild(svg('text', { class: 'empty', x: m.l + w / 2, y: m.t + h / 2, 'text-anchor': 'middle' },
          'No endorsements in this range yet'));
      }
      var n = series.length || 1;
      var slot = w / n;
      var gap = slot > 6 ? Math.min(4, slot * 0.2) : 0;
      var every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(w / 70))));
      series.forEach(function (p, idx) {
        var d = new Date(p[0] * 1000);
        var x = m.l + idx * slot;
        var bh = max ? (h * p[1]) / max : 0;
        if (p[1] > 0) {
          var rect = svg('rect', {
            class: 'col', x: (x + gap / 2).toFixed(2), y: (m.t + h - bh).toFixed(2),
            width: Math.max(1, slot - gap).toFixed(2), height: Math.max(1, bh).toFixed(2), rx: Math.min(3, slot / 4).toFixed(1)
          });
          var label = range === 'minute' ? hm(d) : range === 'hour' ? dm(d) + ' ' + hm(d) : dm(d) + ' ' + d.getUTCFullYear();
          rect.appendChild(svg('title', {}, label + ' UTC: ' + NF.format(p[1])));
          node.appendChild(rect);
        }
        if ((n - 1 - idx) % every === 0) {
          var text = range === 'minute' ? hm(d) : range === 'hour' ? (d.getUTCHours() === 0 || idx < every ? dm(d) : hm(d)) : dm(d);
          node.appendChild(svg('text', { class: 'axis', x: (x + slot / 2).toFixed(1), y: height - 8, 'text-anchor': 'middle' }, text));
        }
      });
      box.textContent = '';
      box.appendChild(node);
    }

    function renderStats(data) {
      stats = data;
      setCount(data.count);
      setOpen(data.open);
      bars($('#by-source'), data.by_source, sourceLabel);
      bars($('#by-country'), data.by_country, countryLabel);
      chart();
    }

    function entryRow(e, fresh) {
      var tr = el('tr', { 'data-eid': e.id });
      if (e.struck) tr.className = 'struck';
      if (fresh) tr.classList.add('fresh');
      tr.appendChild(el('td', { class: 'when' }, stamp(e.time)));
      tr.appendChild(el('td', { class: 'name' }, e.name));
      tr.appendChild(el('td', { class: 'country' }, e.country || '—'));
      tr.appendChild(el('td', { class: 'source' }, sourceLabel(e.source)));
      tr.appendChild(el('td', { class: 'shown' }, e.public ? 'Yes' : 'No'));
      var status = el('td', { class: 'status' });
      if (e.struck) {
        var when = e.struck.at ? ' · ' + stamp(new Date(e.struck.at * 1000).toISOString()).slice(5, 16) : '';
        status.textContent = 'Struck by ' + (e.struck.by || '?') + when + (e.struck.reason ? ' — ' + e.struck.reason : '');
      } else {
        status.appendChild(el('span', { class: 'pill ok' }, 'Counted'));
      }
      tr.appendChild(status);
      var act = el('td', { class: 'num act' });
      var btn = el('button', {
        type: 'button', class: 'btn small ' + (e.struck ? 'ghost' : 'danger'),
        'data-action': e.struck ? 'unstrike' : 'strike', 'data-eid': e.id,
        'aria-label': (e.struck ? 'Restore ' : 'Strike ') + e.name
      }, e.struck ? 'Restore' : 'Strike');
      act.appendChild(btn);
      tr.appendChild(act);
      return tr;
    }

    function renderEntries(list, append) {
      var body = $('#entries tbody');
      if (!append) body.textContent = '';
      var ids = {};
      list.forEach(function (e) {
        ids[e.id] = true;
        body.appendChild(entryRow(e, !append && knownIds !== null && !knownIds[e.id]));
      });
      if (!append) knownIds = ids;
      else list.forEach(function (e) { knownIds[e.id] = true; });
      if (!body.children.length) {
        var row = el('tr');
        row.appendChild(el('td', { colspan: '7', class: 'muted' }, 'No endorsements yet.'));
        body.appendChild(row);
      }
      moreBtn.hidden = !nextCursor;
    }

    function refresh() {
      lastRefresh = Date.now();
      return Promise.all([
        api(statsUrl).then(renderStats),
        api(entriesUrl + '?limit=' + Math.min(500, shown)).then(function (data) {
          nextCursor = data.next_cursor;
          renderEntries(data.endorsements, false);
        })
      ]).then(function () {
        failed = false;
        showError('');
      }, function (err) {
        failed = true;
        showError('Could not refresh: ' + err.message);
      });
    }

    function soon() {
      if (pending) return;
      var wait = Math.max(0, 1000 - (Date.now() - lastRefresh));
      pending = setTimeout(function () { pending = null; refresh(); }, wait);
    }

    function setLive(state, text) {
      live.setAttribute('data-state', state);
      liveText.textContent = text;
    }

    /* The shared client's role (widget.js sets <html data-live>): leader, follower or
       solo hear the stream; polling means it is down; paused, the tab is hidden. */
    function connect() {
      if (!LIVE) { setLive('polling', 'Updating every 5 s'); return; }
      var html = document.documentElement;
      new MutationObserver(function () {
        var role = html.getAttribute('data-live');
        streamLive = role === 'leader' || role === 'follower' || role === 'solo';
        if (streamLive) setLive('live', 'Live');
        else if (role === 'polling') setLive('polling', 'Reconnecting · updating every 5 s');
      }).observe(html, { attributes: true, attributeFilter: ['data-live'] });
      LIVE.watch(root.getAttribute('data-live-api'), id, function (n) {
        if (typeof n === 'number') setCount(n);
        soon();
      });
    }

    setInterval(function () {
      if (document.hidden) return;
      if (!streamLive || failed || Date.now() - lastRefresh > 30000) refresh();
    }, 5000);

    $('#entries').addEventListener('click', function (ev) {
      var btn = ev.target.closest('button[data-action]');
      if (!btn) return;
      var action = btn.getAttribute('data-action');
      btn.disabled = true;
      api(base + '/endorsements/' + encodeURIComponent(btn.getAttribute('data-eid')) + '/' + action, {
        method: 'POST', body: action === 'strike' ? { reason: '' } : {}
      }).then(function (data) {
        setCount(data.count);
        return refresh();
      }).catch(function (err) { showError(err.message); btn.disabled = false; });
    });

    toggle.addEventListener('click', function () {
      var open = toggle.getAttribute('data-open') === 'true';
      toggle.disabled = true;
      api(base + '/' + (open ? 'close' : 'open'), { method: 'POST', body: {} })
        .then(function (data) { setOpen(data.open); })
        .catch(function (err) { showError(err.message); })
        .then(function () { toggle.disabled = false; });
    });

    moreBtn.addEventListener('click', function () {
      if (!nextCursor) return;
      moreBtn.disabled = true;
      api(entriesUrl + '?limit=50&cursor=' + encodeURIComponent(nextCursor)).then(function (data) {
        shown += data.endorsements.length;
        nextCursor = data.next_cursor;
        renderEntries(data.endorsements, true);
      }).catch(function (err) { showError(err.message); }).then(function () { moreBtn.disabled = false; });
    });

    var tabs = Array.prototype.slice.call(document.querySelectorAll('[role="tab"]'));
    function select(tab) {
      tabs.forEach(function (t) {
        var on = t === tab;
        t.setAttribute('aria-selected', on ? 'true' : 'false');
        t.tabIndex = on ? 0 : -1;
      });
      range = tab.getAttribute('data-range');
      $('#chart').setAttribute('aria-labelledby', tab.id);
      chart();
    }
    tabs.forEach(function (tab, i) {
      tab.addEventListener('click', function () { select(tab); });
      tab.addEventListener('keydown', function (ev) {
        var j = ev.key === 'ArrowRight' ? i + 1 : ev.key === 'ArrowLeft' ? i - 1 : null;
        if (j === null) return;
        ev.preventDefault();
        var next = tabs[(j + tabs.length) % tabs.length];
        next.focus();
        select(next);
      });
    });

    var resizeTimer = null;
    window.addEventListener('resize', function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(chart, 150);
    });

    setCount(Number(countEl.textContent.replace(/[^0-9]/g, '')) || 0);
    refresh();
    connect();
  }

  var dash = document.getElementById('dashboard');
  if (dash) dashboard(dash);
  var over = document.getElementById('overview');
  if (over) overview(over);
})();
