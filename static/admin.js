/* Undersign operator console: live dashboard, overview and block lists. No framework, no
 * third party. Live counts come from the shared live-count client in widget.js
 * (UndersignLive: one event stream for every console tab, hosted page and widget of this
 * browser); each count refetches the admin stats (with the surge banner) and latest
 * endorsements (at most once a second); polling every 5 s is the fallback while the stream
 * is down, and every 10 s while a surge is shown, so the banner goes when the surge ends.
 * Every request gives up after 10 s (12 s for actions) with a message in the error area.
 * Every value from the server is set as text. */
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
    var post = !!options.method && options.method !== 'GET';  /* an action */
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
        if (!response.ok) {
          var err = new Error(data.detail || data.title || ('HTTP ' + response.status));
          err.errors = data.errors || null;
          throw err;
        }
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

  var regionNames = null;
  try { regionNames = new Intl.DisplayNames(['en'], { type: 'region' }); } catch (e) { regionNames = null; }
  function countryLabel(code) {
    var name = code;
    try { name = regionNames ? regionNames.of(code) : code; } catch (e) { name = code; }
    return name && name !== code ? name + ' (' + code + ')' : code;
  }
  function sourceLabel(s) { return s === 'direct' ? 'Hosted page (direct)' : s.replace(/^https?:\/\//, ''); }
  function pct(share) { return Math.round(share * 100) + '%'; }

  function clearFieldError(input) {
    var box = input && input.id ? document.getElementById(input.id + '-err') : null;
    if (!box) return;
    box.hidden = true;
    box.textContent = '';
    input.removeAttribute('aria-invalid');
  }

  /* Field errors of a 422 problem beside their fields (ids: <prefix>-<field>-err); the
   * message of anything else, or of errors without a field here, goes to `fallback`. */
  function fieldErrors(prefix, err, fallback, aliases) {
    var rest = [];
    Array.prototype.forEach.call(document.querySelectorAll('[id^="' + prefix + '-"][id$="-err"]'), function (p) {
      p.textContent = '';
      p.hidden = true;
      var input = document.getElementById(p.id.replace(/-err$/, ''));
      if (input) input.removeAttribute('aria-invalid');
    });
    if (!err) return;
    if (!err.errors) { fallback(err.message); return; }
    Object.keys(err.errors).forEach(function (field) {
      var name = (aliases && aliases[field]) || field;
      var box = document.getElementById(prefix + '-' + name + '-err');
      if (!box) { rest.push(err.errors[field]); return; }
      box.textContent = err.errors[field];
      box.hidden = false;
      var input = document.getElementById(prefix + '-' + name);
      if (input) input.setAttribute('aria-invalid', 'true');
    });
    fallback(rest.join(' '));
  }

  /* Email confirmation, side by side: confirmed, pending, confirmation rate. */
  function confirmation(root, s) {
    var box = $('[data-confirmation]', root);
    if (!box || s.confirm !== 'email') return;
    $('[data-confirmed]', box).textContent = NF.format(s.count);
    $('[data-pending]', box).textContent = NF.format(s.pending);
    $('[data-rate]', box).textContent = s.confirmation_rate == null ? '–' : pct(s.confirmation_rate);
  }

  /* -- overview ----------------------------------------------------------------------- */
  function overview(root) {
    function paintCount(card, count, goal) {
      $('[data-count]', card).textContent = NF.format(count);
      setWidth($('[data-meter]', card), goal ? (100 * count) / goal : 0);
    }
    function paint(s, card) {
      paintCount(card, s.count, s.goal);
      confirmation(card, s);
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
        Object.keys(data.mail || {}).forEach(function (k) {
          var node = $('[data-mail="' + k + '"]');
          if (node) node.textContent = NF.format(data.mail[k]);
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
      confirmation(root, data);
      setOpen(data.open);
      bars($('#by-source'), data.by_source, sourceLabel);
      bars($('#by-country'), data.by_country, countryLabel);
      chart();
      renderSurge(data.surge);
      renderSeal(data.log);
      suggestions($('#bulk-sources'), Object.keys(data.by_source), sourceLabel);
      suggestions($('#bulk-countries'), Object.keys(data.by_country), countryLabel);
    }

    /* The transparency log's seal lag: entries not yet under a signed checkpoint. */
    function renderSeal(log) {
      if (!log) return;
      var text = 'Transparency log: ' + NF.format(log.sealed) + ' of ' + NF.format(log.size) + ' entries sealed';
      text += log.unsealed ? ' · ' + NF.format(log.unsealed) + ' waiting' +
        (log.lag_seconds == null ? '' : ', seal lag ' + log.lag_seconds + ' s') : ' · seal lag 0 s';
      $('#seal').textContent = text;
    }

    /* -- the surge banner: the statement's rate, and who and where it comes from -------- */
    var surgeOn = false;
    function renderSurge(surge) {
      var box = $('#surge');
      surgeOn = !!(surge && surge.alert);
      box.hidden = !surgeOn;
      if (!surgeOn) return;
      var surging = surge.sources.filter(function (s) { return s.surging; });
      var names = surging.map(function (s) { return sourceLabel(s.source); });
      if (surge.surging) {
        $('#surge-heading').textContent = 'Surge: ' + NF.format(surge.recent) + ' endorsements in the last 5 minutes';
        var usual = surge.usual > 0
          ? 'About ' + NF.format(Math.round(surge.recent / surge.usual)) + ' times the usual ' +
            NF.format(surge.usual) + ' per 5 minutes (a surge starts above ' + NF.format(surge.threshold) + ').'
          : 'Nothing arrived in the day before, so only the floor applies: a surge starts above ' +
            NF.format(surge.threshold) + '.';
        $('#surge-text').textContent = usual + ' The proof of work costs double until it ends.' +
          (names.length ? ' Surging sources: ' + names.join(', ') + '.' : '') +
          ' Struck endorsements still count here: a surge is what arrives.';
      } else {
        $('#surge-heading').textContent = names.length === 1 ? 'A source is surging' : 'Sources are surging';
        $('#surge-text').textContent = names.join(', ') + (names.length === 1 ? ' is' : ' are') +
          ' far above usual; the statement as a whole is not (' + NF.format(surge.recent) +
          ' in the last 5 minutes), so the proof of work is unchanged.';
      }
      var list = $('#surge-sources'), countries = $('#surge-countries');
      var fillSource = focusedIn(list, 'data-fill-source');
      var fillCountry = focusedIn(countries, 'data-fill-country');
      list.textContent = '';
      surge.sources.slice(0, 6).forEach(function (s) {
        var li = el('li', s.surging ? { class: 'hot' } : null);
        li.appendChild(el('span', { class: 'who', title: s.source }, sourceLabel(s.source)));
        li.appendChild(el('span', { class: 'num' }, NF.format(s.recent) + ' · ' + pct(s.share)));
        if (s.surging) li.appendChild(el('span', { class: 'pill off' }, 'surging'));
        var use = el('button', { type: 'button', class: 'btn small ghost', 'data-fill-source': s.source,
          'aria-label': 'Strike in bulk from ' + sourceLabel(s.source) }, 'Bulk strike…');
        li.appendChild(use);
        list.appendChild(li);
      });
      countries.textContent = '';
      surge.countries.slice(0, 6).forEach(function (c) {
        var li = el('li');
        li.appendChild(el('span', { class: 'who' }, c.country ? countryLabel(c.country) : 'No country given'));
        li.appendChild(el('span', { class: 'num' }, NF.format(c.recent) + ' · ' + pct(c.share)));
        if (c.country) {
          li.appendChild(el('button', { type: 'button', class: 'btn small ghost', 'data-fill-country': c.country,
            'aria-label': 'Strike in bulk from ' + countryLabel(c.country) }, 'Bulk strike…'));
        }
        countries.appendChild(li);
      });
      if (!surge.countries.length) countries.appendChild(el('li', { class: 'muted' }, 'None recorded.'));
      focusAgain(list, 'data-fill-source', fillSource);
      focusAgain(countries, 'data-fill-country', fillCountry);
    }

    function suggestions(list, keys, label) {
      list.textContent = '';
      keys.slice(0, 50).forEach(function (k) { list.appendChild(el('option', { value: k }, label(k))); });
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
        status.textContent = 'Struck by ' + (e.struck.by || '?') + when + (e.struck.reason ? ' — ' + e.struck.reason : '') +
          (e.struck.bulk ? ' (bulk ' + e.struck.bulk + ')' : '');
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

    /* The rows are rebuilt on every refresh (about once a second while endorsements
       arrive): the keyboard stays on the row it was on, and a row just struck or restored
       keeps it on its new button. */
    var refocus = null;
    function focusedIn(box, name) {
      var a = document.activeElement;
      return a && a !== box && box.contains(a) ? a.getAttribute(name) : null;
    }
    function focusAgain(box, name, value) {
      var again = value && box.querySelector('button[' + name + '="' + CSS.escape(value) + '"]');
      if (again) again.focus();
    }

    function renderEntries(list, append) {
      var body = $('#entries tbody');
      var eid = append ? null : refocus || focusedIn(body, 'data-eid');
      refocus = null;
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
      focusAgain(body, 'data-eid', eid);
    }

    /* One refresh at a time: on a slow network they had overlapped (up to six requests,
       the browser's limit per host) and could be drawn out of order. A call meanwhile
       gets one more refresh once this one is in, and waits for it (unless this one
       failed: its message stays until the regular retry). */
    var inFlight = null, again = false;
    function refresh() {
      if (inFlight) { again = true; return inFlight; }
      lastRefresh = Date.now();
      inFlight = Promise.all([
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
      }).then(function () {
        inFlight = null;
        var more = again && !failed;  /* after a failure the 5-second retry comes in time */
        again = false;
        if (more) return refresh();
      });
      return inFlight;
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
      var stale = Date.now() - lastRefresh > (surgeOn ? 10000 : 30000);
      if (!streamLive || failed || stale) refresh();
    }, 5000);

    /* -- bulk moderation: preview (dry run), strike exactly what was previewed, undo ----- */
    var bulkForm = $('#bulk-form');
    var strikeBtn = $('#bulk-strike');
    var undoBtn = $('#bulk-undo');
    var bulkResult = $('#bulk-result');
    var preview = null;
    var lastBulk = null;

    function utc(value) {
      if (!value) return undefined;
      return (value.length === 16 ? value + ':00' : value) + 'Z';
    }
    function bulkFilters() {
      var body = {};
      var source = $('#bulk-source').value.trim();
      var country = $('#bulk-country').value.trim();
      if (source) body.source = source;
      if (country) body.country = country;
      if ($('#bulk-since').value) body.since = utc($('#bulk-since').value);
      if ($('#bulk-until').value) body.until = utc($('#bulk-until').value);
      return body;
    }
    function bulkSay(text, kind) {
      bulkResult.textContent = text;
      bulkResult.className = 'status-line' + (kind ? ' ' + kind : '');
    }
    function bulkFail(err) {
      /* a message without a field replaces the status line; field errors leave it be */
      fieldErrors('bulk', err, function (rest) { if (rest) bulkSay(rest, 'bad'); });
    }
    function resetPreview() {
      preview = null;
      strikeBtn.hidden = true;
    }
    bulkForm.addEventListener('input', function (ev) {
      clearFieldError(ev.target);
      /* the reason is not a filter: only a changed filter needs a new preview */
      if (preview && ev.target.id !== 'bulk-reason') { resetPreview(); bulkSay('Filters changed: preview again.'); }
    });
    bulkForm.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var filters = bulkFilters();
      var body = Object.assign({ dry_run: true }, filters);
      var btn = $('#bulk-preview');
      btn.disabled = true;
      resetPreview();
      bulkSay('');  /* a new preview: what the last one (or a changed filter) said is past */
      api(base + '/strike-bulk', { method: 'POST', body: body }).then(function (data) {
        bulkFail(null);
        preview = { filters: filters, upto: data.upto, matched: data.matched };
        if (!data.matched) { bulkSay('No endorsement matches. Nothing has changed.'); return; }
        bulkSay(NF.format(data.matched) + (data.matched === 1 ? ' endorsement matches' : ' endorsements match') +
          '. Nothing has changed yet; endorsements arriving from now on are left alone.', 'warn');
        strikeBtn.textContent = 'Strike ' + NF.format(data.matched) + (data.matched === 1 ? ' endorsement' : ' endorsements');
        strikeBtn.hidden = false;
        strikeBtn.focus();
      }).catch(bulkFail).then(function () { btn.disabled = false; });
    });
    strikeBtn.addEventListener('click', function () {
      if (!preview) return;
      var body = Object.assign({ reason: $('#bulk-reason').value.trim() }, preview.filters);
      if (preview.upto) body.upto = preview.upto;
      strikeBtn.disabled = true;
      api(base + '/strike-bulk', { method: 'POST', body: body }).then(function (data) {
        bulkFail(null);
        resetPreview();
        lastBulk = data.bulk_id;
        bulkSay('Struck ' + NF.format(data.struck) + (data.struck === 1 ? ' endorsement' : ' endorsements') +
          (data.struck < data.matched ? ' (' + NF.format(data.matched - data.struck) + ' were struck meanwhile)' : '') +
          ' as bulk ' + data.bulk_id + '. The count is now ' + NF.format(data.count) + '.', 'done');
        undoBtn.textContent = 'Undo bulk ' + data.bulk_id;
        undoBtn.hidden = false;
        setCount(data.count);
        return refresh();
      }).catch(bulkFail).then(function () { strikeBtn.disabled = false; });
    });
    undoBtn.addEventListener('click', function () {
      if (!lastBulk) return;
      undoBtn.disabled = true;
      api(base + '/bulk/' + encodeURIComponent(lastBulk) + '/undo', { method: 'POST', body: {} }).then(function (data) {
        bulkSay('Restored ' + NF.format(data.restored) + (data.restored === 1 ? ' endorsement' : ' endorsements') +
          ' of bulk ' + data.bulk_id + '. The count is now ' + NF.format(data.count) + '.', 'done');
        lastBulk = null;
        undoBtn.hidden = true;
        setCount(data.count);
        return refresh();
      }).catch(bulkFail).then(function () { undoBtn.disabled = false; });
    });
    $('#surge').addEventListener('click', function (ev) {
      var btn = ev.target.closest('button[data-fill-source], button[data-fill-country]');
      if (!btn) return;
      var source = btn.getAttribute('data-fill-source');
      var country = btn.getAttribute('data-fill-country');
      if (source) $('#bulk-source').value = source;
      if (country) $('#bulk-country').value = country;
      resetPreview();
      bulkSay('Filter set from the surge: add a reason, then preview.');
      $('#bulk').scrollIntoView({ block: 'start' });
      $('#bulk-reason').focus();
    });

    $('#entries').addEventListener('click', function (ev) {
      var btn = ev.target.closest('button[data-action]');
      if (!btn) return;
      var action = btn.getAttribute('data-action');
      refocus = btn.getAttribute('data-eid');  /* a disabled button loses the focus */
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

  /* -- block lists -------------------------------------------------------------------- */
  function blocksPage(root) {
    var url = root.getAttribute('data-api');
    var form = $('#block-form');
    var value = $('#block-value');
    var errorEl = $('#error');
    var status = $('#block-status');
    var body = $('#block-list tbody');
    var HINTS = {
      network: ['Network', '203.0.113.0/24', 'IPv4 or IPv6, as CIDR or one address. Beyond /24 (IPv4) or /48 (IPv6) only a keyed hash is kept.'],
      email_domain: ['Email domain', 'example.com', 'Addresses at its subdomains are refused too.']
    };
    function kind() { return $('input[name="kind"]:checked', form).value; }
    function showError(message) { errorEl.textContent = message; errorEl.hidden = !message; }
    function say(text, cls) { status.textContent = text; status.className = 'status-line' + (cls ? ' ' + cls : ''); }
    function when(iso) { return iso ? stamp(iso).slice(0, 16) : 'Never'; }

    function row(b) {
      var tr = el('tr', { 'data-block': b.id });
      var cell = el('td', { class: 'name' });
      var what = el('span', { class: 'what' });
      what.appendChild(el('span', { class: 'mono' }, b.label));
      what.appendChild(el('span', { class: 'tag' },
        b.email_domain ? 'email domain' : 'IPv' + b.ip_version + (b.hashed ? ', hashed' : '')));
      cell.appendChild(what);
      tr.appendChild(cell);
      tr.appendChild(el('td', { class: 'reason' }, b.reason || '—'));
      tr.appendChild(el('td', { class: 'when added' }, when(b.created) + ' · ' + b.by));
      tr.appendChild(el('td', { class: 'when ends' }, when(b.expires)));
      var act = el('td', { class: 'num act' });
      act.appendChild(el('button', { type: 'button', class: 'btn small danger', 'data-remove': b.id,
        'aria-label': 'Remove the block of ' + b.label }, 'Remove'));
      tr.appendChild(act);
      return tr;
    }
    function render(list) {
      body.textContent = '';
      list.forEach(function (b) { body.appendChild(row(b)); });
      if (!list.length) {
        var empty = el('tr');
        empty.appendChild(el('td', { colspan: '5', class: 'muted' }, 'No blocks: every network and email domain may endorse.'));
        body.appendChild(empty);
      }
    }
    function load() {
      return api(url).then(function (data) { render(data.blocks); showError(''); })
        .catch(function (err) { showError('Could not load the blocks: ' + err.message); });
    }
    Array.prototype.forEach.call(form.querySelectorAll('input[name="kind"]'), function (radio) {
      radio.addEventListener('change', function () {
        var h = HINTS[kind()];
        $('#block-value-label').textContent = h[0];
        value.setAttribute('placeholder', h[1]);
        $('#block-value-hint').textContent = h[2];
        fieldErrors('block', null);
      });
    });
    form.addEventListener('input', function (ev) { clearFieldError(ev.target); });
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var data = { reason: $('#block-reason').value.trim() };
      data[kind()] = value.value.trim();
      var seconds = Number($('#block-expires').value);
      if (seconds) data.expires = new Date(Date.now() + seconds * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
      var btn = $('#block-add');
      btn.disabled = true;
      api(url, { method: 'POST', body: data }).then(function (b) {
        fieldErrors('block', null);
        say('Blocked ' + b.label + (b.expires ? ' until ' + when(b.expires) + ' UTC' : '') + '.', 'done');
        form.reset();
        $('input[name="kind"][value="network"]', form).dispatchEvent(new Event('change'));
        return load();
      }).catch(function (err) {
        fieldErrors('block', err, function (rest) { say(rest, rest ? 'bad' : ''); },
          { network: 'value', email_domain: 'value' });
      }).then(function () { btn.disabled = false; });
    });
    body.addEventListener('click', function (ev) {
      var btn = ev.target.closest('button[data-remove]');
      if (!btn) return;
      btn.disabled = true;
      var id = btn.getAttribute('data-remove');
      api(url + '/' + encodeURIComponent(id), { method: 'DELETE' }).then(function () {
        say('Block removed; endorsements from there are accepted again.', 'done');
        return load();
      }).catch(function (err) { showError(err.message); btn.disabled = false; });
    });
    load();
  }

  var dash = document.getElementById('dashboard');
  if (dash) dashboard(dash);
  var blocks = document.getElementById('blocks');
  if (blocks) blocksPage(blocks);
  var over = document.getElementById('overview');
  if (over) overview(over);
})();
