/* Undersign widget: the iframe's behaviour, also used by the hosted page /s/<id>.
   Reads its data from #w's data-* attributes; inserts text with textContent only. */
(function () {
  'use strict';
  var d = document, w = window;
  /* A signal that aborts a fetch (AbortError) if its answer is not in within ms. */
  function deadline(ms) {
    if (!w.AbortController) return;
    var c = new AbortController();
    setTimeout(function () { c.abort(); }, ms);
    return c.signal;
  }

  /* -- live counts: one stream per browser partition, shared with the console (see
     static/README.md). Role in <html data-live>. */
  var live = (w.UndersignLive = (function () {
    var me = Math.random(), nav = navigator, base, bc, on, L, beat, kept, claim, es, timer, redo, held, ask;
    var fns = {}, mem = {}, cur = [], cache = {}, tags = {};
    function role(r) { d.documentElement.dataset.live = r; }
    function say(t, m) {
      m = m || {};
      m.t = t;
      m.f = me;
      m.i = Object.keys(fns);
      if (held) m.k = 1;
      if (bc) bc.postMessage(m);
    }
    function got(c) {
      for (var id in c) if (fns[id]) fns[id](c[id]);
    }
    function relay(id, n) {
      var c = {};
      c[id] = cache[id] = n;
      got(c);
      say('c', { c: c });
    }
    function hush() {
      clearTimeout(claim);
      claim = 0;
      beat = Date.now();
    }
    function stop() {
      hush();
      clearTimeout(redo);
      clearInterval(timer);
      timer = 0;
      if (es) es.close();
      es = null;
    }
    function poll() {
      cur.forEach(function (id) {
        fetch(base + '/statements/' + encodeURIComponent(id) + '/count', {
          headers: tags[id] ? { 'If-None-Match': tags[id] } : {}, cache: 'no-store', signal: deadline(10000)
        }).then(function (r) {
          if (r.status != 200) return;
          tags[id] = r.headers.get('ETag');
          return r.json().then(function (b) { relay(id, b.count); });
        }).catch(function () { /* offline or late: try again at the next tick */ });
      });
    }
    function polling(yes) {
      clearInterval(timer);
      timer = yes && setInterval(poll, 5000);
      if (yes) poll();
      role(yes ? 'polling' : bc ? 'leader' : 'solo');
    }
    function open() {
      stop();
      var u = {};
      [].concat.apply(Object.keys(fns), Object.values(mem)).forEach(function (id) { u[id] = 1; });
      cur = Object.keys(u).sort();
      cache = {};
      if (!w.EventSource) return polling(1);
      var s = (es = new EventSource(base + '/events?statements=' + cur.map(encodeURIComponent).join(',')));
      polling(0);
      s.addEventListener('count', function (e) {
        try { var m = JSON.parse(e.data); relay(m.id, m.count); } catch (x) { /* ignore a bad event */ }
      });
      s.onopen = function () { polling(0); };
      s.onerror = function () {
        if (s.readyState == 2) { es = null; polling(1); } else if (!timer) polling(1);
      };
    }
    function reopen() {
      clearTimeout(redo);
      redo = setTimeout(open, 50);
    }
    function lead() {
      L = me;
      say('lead');
      open();
    }
    /* Who leads when nothing is heard from a leader for 3 s: the holder of the Web Lock;
       without one (the lock refused), a claim that no smaller id contests for 400 ms and
       that no lock holder spoke against for 3 s. A document waiting for the lock waits. */
    function check() {
      if (!on) return;
      if (L == me) return say('lead');
      var now = Date.now(), quiet = !(now - beat < 3000);
      if (held) return L && !quiet ? say('hold') : lead();
      if (!claim && quiet && ask === 0 && !(now - kept < 3000)) {
        say('claim');
        claim = setTimeout(lead, 400);
      }
    }
    function join() {
      if (d.hidden) return role('paused');
      if (!bc) return es || timer || open();
      if (on) return;
      on = 1;
      L = null;
      beat = Date.now() - 2000; /* claims no sooner than 1 s after joining */
      role('follower');
      say('hi', { a: 1 });
      if (nav.locks && ask !== 0) {
        var a = (ask = new AbortController());
        nav.locks.request('undersign-live-v1', { signal: a.signal }, function () {
          if (a != ask) return;
          ask = null;
          return new Promise(function (r) {
            held = r;
            say('hold'); /* claimants without the lock give way from now on */
            setTimeout(check, L === 0 ? 0 : 800); /* time to hear a leader holding no lock */
          });
        }).catch(function (e) { if (a == ask) ask = 0; });
      } else ask = 0;
      setTimeout(check, 1050);
    }
    function leave() {
      stop();
      if (on) say('bye');
      if (ask) ask.abort();
      ask = ask && null;
      if (held) held();
      held = null;
      if (L == me) L = 0;
      on = 0;
      role('paused');
    }
    function hear(e) {
      var m = e.data, f = m.f, t = m.t;
      if (m.k) kept = Date.now();
      if (t == 'bye') {
        delete mem[f];
        if (m.k) kept = 0;
        if (L == f) {
          L = 0;
          beat = m.k ? Date.now() - 2000 : 0; /* the next lock holder speaks first */
          check();
        }
        return;
      }
      mem[f] = m.i;
      if (t == 'claim') {
        if (L == me) say('lead');
        else if (held) check();
        else if (!claim || f < me) hush();
        return;
      }
      if (m.k && claim) hush();
      if (t == 'lead') {
        if (L == me) {
          if (held || (!m.k && f > me)) return say('lead');
          stop();
          role('follower');
        }
        hush();
        if (L != f) {
          L = f;
          mem = {};
          mem[f] = m.i;
          if (on) say('hi');
        }
      }
      if (f == L) {
        beat = Date.now();
        if (m.c) got(m.c);
      } else if (L == me && t == 'hi') {
        if (m.i.some(function (id) { return cur.indexOf(id) < 0; })) reopen();
        if (m.a) say('lead', { c: cache });
      }
    }
    return {
      watch: function (api, id, fn) {
        var fresh = !fns[id];
        fns[id] = fn;
        if (!base) {
          base = api;
          try {
            (bc = new BroadcastChannel('undersign-live-v1')).onmessage = hear;
          } catch (e) { bc = null; }
          d.addEventListener('visibilitychange', function () { d.hidden ? leave() : join(); });
          w.addEventListener('pagehide', leave);
          setInterval(check, 1000);
        } else if (fresh) {
          say('hi', { a: 1 });
          if (es || timer) reopen();
        }
        join();
      }
    };
  })());

  var root = d.getElementById('w');
  if (!root) return;
  var ds = root.dataset, M = JSON.parse(ds.i18n || '{}'), lang = d.documentElement.lang || 'en';
  /* For Intl: the language, its fallbacks, English; skip the language if this browser
     lists it but has no data for it (Chromium without Kazakh region names, say). Worked
     out on first use, not at start: loading the region names takes ~20 ms. */
  var L0 = (ds.locales || lang).split(' '), L1;
  function locales() {
    if (L1) return L1;
    L1 = L0.slice();
    try {
      var us = function (l) { return new Intl.DisplayNames([l], { type: 'region' }).of('US'); };
      var mine = us(lang);
      if (L1.length > 2 && (mine == 'US' || mine == us('en'))) L1.shift();
    } catch (e) { /* no DisplayNames: leave the list */ }
    return L1;
  }
  var api = ds.api, framed = w.parent !== w, layout = ds.layout;
  var ao = location.ancestorOrigins, host = framed ? (ao && ao.length ? ao[0] : ds.origin || '') : '';
  var $ = function (id) { return d.getElementById(id); };
  var num = root.querySelector('[data-count]'), count = num ? +num.dataset.count : 0;
  /* The count is in the HTML, so it shows in the first paint. What can wait (the live
     stream, recent endorsers, sizing, country names) starts once that paint is on screen,
     or after 500 ms when the page is not being drawn (hidden, scrolled far away). */
  var waiting = [];
  function afterPaint(fn) { if (waiting) waiting.push(fn); else fn(); }
  function painted() {
    var q = waiting || [];
    waiting = null;
    q.forEach(function (fn) { fn(); });
  }

  function fill(s, v) {
    return String(s).replace(/\{(\w+)\}/g, function (m, k) { return v && k in v ? v[k] : m; });
  }
  function t(k, v) { var s = M[k]; return fill(s == null ? k : typeof s == 'string' ? s : s.other, v); }
  function plural(k, n) {
    var s = M[k];
    if (!s || typeof s == 'string') return t(k);
    var f = 'other';
    try { f = new Intl.PluralRules(lang).select(n); } catch (e) { /* old browser */ }
    return s[f] || s.other;
  }
  function fmt(n, o) {
    try { return new Intl.NumberFormat(locales(), o).format(n); } catch (e) { return String(n); }
  }
  function text(el, s) { if (el) el.textContent = s; }

  /* -- the count ------------------------------------------------------------------- */
  function setCount(n) {
    n = +n;
    if (!num || !(n >= 0) || n === count) return;
    var up = n > count, goal = +ds.goal || 1;
    count = n;
    num.dataset.count = String(n);
    text(num, fmt(n));
    text($('count-label'), plural('count', n));
    var bar = root.querySelector('progress');
    if (bar) bar.value = Math.min(n, goal);
    text(root.querySelector('[data-progress]'), t('progress', { percent: fmt(n / goal, { style: 'percent' }) }));
    if (up) {
      num.classList.remove('bump');
      void num.offsetWidth;
      num.classList.add('bump');
      later(loadRecent, 800);
    }
  }

  if (num) afterPaint(function () { live.watch(api.replace(/\/statements\/[^/]*$/, ''), ds.statement, setCount); });

  /* -- recent endorsers -------------------------------------------------------------- */
  var regions;
  function country(c) {
    try {
      if (regions === undefined) regions = new Intl.DisplayNames(locales(), { type: 'region' });
      return (c && regions.of(c)) || c || '';
    } catch (e) { regions = null; return c || ''; }
  }
  /* The server keeps times to the minute only: so do these ("this minute", "2 minutes ago"). */
  function ago(iso) {
    var s = (Date.parse(iso) - Date.now()) / 6e4, u = [[60, 'minute'], [24, 'hour'], [365, 'day'], [1e9, 'year']];
    try {
      var rtf = new Intl.RelativeTimeFormat(locales(), { numeric: 'auto' });
      for (var i = 0; i < u.length; i++) {
        if (Math.abs(s) < u[i][0]) return rtf.format(Math.round(s), u[i][1]);
        s /= u[i][0];
      }
    } catch (e) { /* fall through */ }
    return String(iso).slice(0, 10);
  }
  var pending = 0;
  function later(fn, ms) { clearTimeout(pending); pending = setTimeout(fn, ms); }
  function loadRecent() {
    var box = $('recent'), list = $('recent-list');
    if (!box || !list) return;
    fetch(api + '/recent', { cache: 'no-store', signal: deadline(10000) }).then(function (r) { return r.ok ? r.json() : null; }).then(function (b) {
      if (!b || !b.recent) return;
      list.textContent = '';
      b.recent.forEach(function (e) {
        var li = d.createElement('li'), who = d.createElement('span'), tm = d.createElement('time');
        var c = country(e.country);
        who.className = 'who';
        who.textContent = e.name ? (c ? e.name + ', ' + c : e.name) : c ? t('someone_from', { country: c }) : t('someone');
        tm.dateTime = e.time;
        tm.textContent = ago(e.time);
        li.appendChild(who);
        li.appendChild(d.createTextNode(' '));
        li.appendChild(tm);
        list.appendChild(li);
      });
      box.hidden = !b.recent.length;
      size();
    }).catch(function () { /* keep what is shown */ });
  }
  afterPaint(loadRecent);

  /* -- the form ------------------------------------------------------------------------ */
  var form = $('f'), sel = $('f-country'), codes = (ds.countries || '').split(' ').filter(Boolean);
  function countries() {
    if (!sel || sel.options.length > 1 || !codes.length) return;
    var opts = codes.map(function (c) { return [c, country(c)]; }), coll;
    try { coll = new Intl.Collator(locales()); } catch (e) { coll = { compare: function (a, b) { return a < b ? -1 : a > b ? 1 : 0; } }; }
    opts.sort(function (a, b) { return coll.compare(a[1], b[1]); });
    var frag = d.createDocumentFragment();
    opts.forEach(function (o) { frag.appendChild(new Option(o[1], o[0])); });
    sel.appendChild(frag);
  }
  if (sel) {
    /* After the first paint (the count shows sooner), or at once when the list is wanted. */
    sel.addEventListener('focus', countries);
    sel.addEventListener('pointerdown', countries);
    afterPaint(function () { setTimeout(countries, 50); });
  }
  var BAD = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\u2028\u2029]/;
  var EMAIL = /^[^@\s]{1,64}@[^@\s.]+(?:\.[^@\s.]+)+$/;
  function check(v) {
    var e = {}, name = v.name.trim(), email = v.email.trim();
    if (!name || !/\p{L}/u.test(name)) e.name = 'err_name';
    else if (Array.from(v.name).length > 200) e.name = 'err_name_long';
    else if (BAD.test(v.name)) e.name = 'err_name_chars';
    if (!email) e.email = 'err_email';
    else if (email.length > 254 || BAD.test(v.email) || !EMAIL.test(email)) e.email = 'err_email_bad';
    if (v.country && codes.length && codes.indexOf(v.country) < 0) e.country = 'err_country';
    if (!v.consent) e.consent = 'err_consent';
    return e;
  }
  var FIELDS = ['name', 'email', 'country', 'consent'];
  function showErrors(errs, messages) {
    var first = null;
    FIELDS.forEach(function (f) {
      var input = $('f-' + f), box = $('f-' + f + '-err'), msg = errs[f];
      if (!input || !box) return;
      if (msg) {
        input.setAttribute('aria-invalid', 'true');
        box.textContent = messages ? msg : t(msg);
        first = first || input;
      } else {
        input.removeAttribute('aria-invalid');
      }
      box.hidden = !msg;
    });
    if (first) first.focus();
    return first;
  }
  function status(msg) {
    var el = $('f-status');
    if (!el) return;
    el.textContent = msg || '';
    el.hidden = !msg;
    size();
  }
  function busy(on, label) {
    var b = $('f-submit');
    if (!b) return;
    b.disabled = on;
    text(b, on ? t(label || 'sending') : t('endorse'));
  }

  /* -- proof of work: an ALTCHA challenge solved in a Web Worker (static/pow.js), started
     when the visitor first reaches the form, so it is usually ready by the time they press
     Endorse. One solution per endorsement; kept after a lost answer (sending it again is
     then a duplicate, never a second count). */
  var powUrl = ds.pow, solving = null;
  function solve() {
    if (!powUrl) return Promise.resolve('');
    if (!solving) {
      solving = fetch(api + '/challenge', { cache: 'no-store', signal: deadline(10000) }).then(function (r) {
        if (!r.ok) throw r;
        return r.json();
      }).then(function (c) {
        return new Promise(function (ok, no) {
          var wk = new Worker(powUrl);
          wk.onmessage = function (e) {
            wk.terminate();
            if (e.data) ok(btoa(JSON.stringify({ challenge: c, solution: e.data })));
            else no(e);
          };
          wk.onerror = function (e) { wk.terminate(); no(e); };
          wk.postMessage(c.parameters);
        });
      });
      solving.catch(function () { solving = null; });
    }
    return solving;
  }
  /* a•••@example.org: the address as "check your inbox" shows it */
  function mask(e) {
    e = e.trim();
    return Array.from(e)[0] + '•••' + e.slice(e.lastIndexOf('@'));
  }
  /* "Save your receipt": its private link, shown once with a 201 (a duplicate gets none). */
  var rc;
  function receipt(r) {
    var box = $('rc');
    rc = r && r.url;
    if (!box) return;
    box.hidden = !rc;
    if (rc) { $('rc-url').value = $('rc-link').href = rc; }
  }
  function done(kind, n, r) {
    receipt(r);
    setCount(n);
    form.hidden = true;
    var panel = $('done'), p = kind == 'pending';
    /* pending: the statement counts an endorsement once its owner confirms by email */
    text($('done-msg'), p ? t('pending', { email: mask(form.elements.email.value) }) : t(kind == 'duplicate' ? 'duplicate' : 'thanks'));
    if (panel) {
      if (p) text(panel.querySelector('.done-title'), t('pending_title'));
      panel.hidden = false;
      panel.classList.toggle('pending', p);
      panel.classList.toggle('dup', kind == 'duplicate');
      panel.focus();
    }
    var open = $('open');
    if (open) open.hidden = true;
    size();
  }
  var SERVER_KEYS = { name: 1, email: 1, country: 1, consent: 1 };
  function send(body, retries) {
    busy(true);
    var slow = setTimeout(function () { busy(true, 'pow_wait'); }, 200);
    solve().then(function (alt) {
      clearTimeout(slow);
      busy(true);
      if (alt) body.altcha = alt;
      return fetch(api + '/endorsements', {
        method: 'POST', cache: 'no-store', signal: deadline(12000),
        headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body)
      });
    }, function (e) {
      clearTimeout(slow);
      /* the challenge: unreachable, late or refused (429, 503), else the work failed */
      throw e.name == 'TypeError' || e.name == 'AbortError' ? e : { name: 'pow', status: e.status };
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (b) {
        busy(false);
        var pow = b.errors && b.errors.altcha;
        if (r.ok || pow) solving = null;  /* used up, or refused: the next send solves anew */
        if (r.ok) return done(b.status, b.count, b.receipt);
        if (pow && retries) return send(body, 0);
        if (r.status == 422 && b.errors) {
          var mine = check(body), local = {}, other = [];
          Object.keys(b.errors).forEach(function (f) {
            if (SERVER_KEYS[f]) local[f] = mine[f] ? t(mine[f]) : b.errors[f];
            else other.push(b.errors[f]);
          });
          showErrors(local, true);
          return status(other.length ? other.join(' ') : t('err_fix'));
        }
        status(r.status == 429 ? t('err_rate') : r.status == 503 ? t('err_busy') : r.status == 409 ? t('err_closed') : b.detail || t('err_network'));
      });
    }).catch(function (e) {
      /* no answer in time: the form keeps its values, and sending it again is safe */
      busy(false);
      status(t(e.status == 429 ? 'err_rate' : e.status == 503 ? 'err_busy' : e.name == 'AbortError' ? 'err_timeout' : e.name == 'pow' ? 'err_pow' : 'err_network'));
    });
  }
  if (form) {
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var v = {
        name: form.elements.name.value, email: form.elements.email.value,
        country: sel ? sel.value : '', consent: $('f-consent').checked, public: $('f-public').checked
      };
      var errs = check(v);
      if (showErrors(errs)) { status(t('err_fix')); return; }
      status('');
      var body = {
        name: v.name, email: v.email, country: v.country, consent: true, public: v.public,
        lang: lang, website: form.elements.website ? form.elements.website.value : ''
      };
      if (host) body.source = host;
      send(body, 1);
    });
    form.addEventListener('focusin', function () { solve().catch(function () {}); });
    form.addEventListener('input', function (ev) {
      var f = ev.target && ev.target.name, box = f && $('f-' + f + '-err');
      if (box && !box.hidden && !check({
        name: form.elements.name.value, email: form.elements.email.value,
        country: sel ? sel.value : '', consent: $('f-consent').checked
      })[f]) {
        box.hidden = true;
        ev.target.removeAttribute('aria-invalid');
        /* every field put right: "check the highlighted fields" goes too */
        if (!form.querySelector('.err:not([hidden])')) $('f-status').hidden = true;
        size();
      }
    });
  }
  var opener = $('open');
  if (opener && form) {
    opener.addEventListener('click', function () {
      /* The form's own button takes over: one "Endorse" on screen at a time. */
      form.hidden = false;
      opener.setAttribute('aria-expanded', 'true');
      opener.hidden = true;
      size();
      $('f-name').focus();
    });
  }

  /* -- sharing --------------------------------------------------------------------------- */
  function copy(value, input, note, msg) {
    function ok() { text(note, msg); }
    function fallback() {
      if (input) { input.select(); try { if (d.execCommand('copy')) ok(); } catch (e) { /* selected */ } }
    }
    if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(value).then(ok, fallback);
    else fallback();
  }
  var cp = $('copy'), sh = $('share');
  if (cp) cp.addEventListener('click', function () { copy(ds.url, $('share-url'), $('copied'), t('copied')); });
  /* The loader grants web-share only where the allied page's browser has Web Share: a
     frame that may not share (Chromium tells) keeps just the copy button. */
  if (sh && navigator.share && (!d.featurePolicy || d.featurePolicy.allowsFeature('web-share'))) {
    sh.hidden = false;
    sh.addEventListener('click', function () {
      navigator.share({ title: d.title, url: ds.url }).catch(function () { /* dismissed */ });
    });
  }
  var rcb = $('rc-copy');
  if (rcb) rcb.addEventListener('click', function () { copy(rc, $('rc-url'), $('rc-copied'), t('receipt_copied')); });
  var cs = $('copy-snippet');
  if (cs) {
    cs.hidden = false;
    cs.addEventListener('click', function () { copy($('snippet').textContent, null, $('snippet-copied'), t('code_copied')); });
  }

  /* -- size and title for the host page ------------------------------------------------- */
  function size() {
    if (!host) return;
    var badge = layout == 'counter' && root.querySelector('.badge');
    var h = Math.ceil(root.getBoundingClientRect().height);
    var msg = { ns: 'undersign', type: 'size', h: h, title: d.title };
    if (badge) {
      msg.w = Math.ceil(badge.getBoundingClientRect().width);
      msg.h = Math.ceil(badge.getBoundingClientRect().height);
    }
    try { w.parent.postMessage(msg, host); } catch (e) { /* host origin unknown */ }
  }
  if (framed && host) {
    w.addEventListener('message', function (e) {
      if (e.source === w.parent && e.origin === host && e.data && e.data.ns == 'undersign' && e.data.type == 'hello') afterPaint(size);
    });
    afterPaint(function () {
      if (w.ResizeObserver) new ResizeObserver(size).observe(root);
      size();
    });
  }

  try {
    new PerformanceObserver(function (list, obs) {
      if (list.getEntriesByName('first-contentful-paint').length) {
        obs.disconnect();
        setTimeout(painted, 0);
      }
    }).observe({ type: 'paint', buffered: true });
  } catch (e) { /* no paint timing: the timer below */ }
  setTimeout(painted, 500);
})();
