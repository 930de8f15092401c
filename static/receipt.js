/* Undersign receipt page (/s/<id>/receipt#<secret>). The secret stays in this browser:
   only its SHA-256 (the commitment in the public log) is sent. The page finds the entry,
   checks that its line carries the commitment, recomputes the log's root from the line and
   its inclusion proof (RFC 9162) and compares it with the signed checkpoint's; where the
   browser has Ed25519 in WebCrypto it checks the checkpoint's signature against the
   served log key too, and says so either way. It offers to withdraw the endorsement. */
(function () {
  'use strict';
  var d = document, root = d.getElementById('receipt');
  if (!root) return;
  var ds = root.dataset, M = JSON.parse(ds.i18n || '{}'), api = ds.api;
  var subtle = window.crypto && window.crypto.subtle, enc = new TextEncoder();
  function $(id) { return d.getElementById(id); }
  function t(k, v) {
    var s = M[k];
    s = s == null ? k : typeof s == 'string' ? s : s.other;
    return String(s).replace(/\{(\w+)\}/g, function (m, n) { return v && n in v ? v[n] : m; });
  }
  function fmt(n) {
    try { return new Intl.NumberFormat((ds.locales || 'en').split(' ')).format(n); } catch (e) { return String(n); }
  }
  function say(id, msg, state) {
    var el = $(id);
    el.textContent = msg;
    if (state) el.dataset.status = state;
  }
  function error(msg) {
    var el = $('rc-error');
    el.textContent = msg || '';
    el.hidden = !msg;
  }
  function hex(bytes) {
    return Array.from(bytes, function (b) { return (b < 16 ? '0' : '') + b.toString(16); }).join('');
  }
  function unb64(s) {
    var raw = atob(s), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }
  function cat() {
    var parts = [].slice.call(arguments), n = 0, k = 0;
    parts.forEach(function (p) { n += p.length; });
    var out = new Uint8Array(n);
    parts.forEach(function (p) { out.set(p, k); k += p.length; });
    return out;
  }
  function sha(bytes) {
    return subtle.digest('SHA-256', bytes).then(function (b) { return new Uint8Array(b); });
  }
  function same(a, b) {
    if (a.length != b.length) return false;
    for (var i = 0; i < a.length; i++) if (a[i] != b[i]) return false;
    return true;
  }
  function get(url, as) {
    return fetch(url, { cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw { status: r.status };
      return r[as || 'json']();
    });
  }

  /* RFC 9162 2.1.3.2: the root that leaf hash `leaf` at `index` and its proof imply. */
  function rootFrom(index, size, leaf, proof) {
    var fn = index, sn = size - 1, r = Promise.resolve(leaf);
    if (!(index < size)) return Promise.reject(new Error('index'));
    proof.forEach(function (p) {
      r = r.then(function (h) {
        if (sn == 0) throw new Error('proof too long');
        var pair;
        if (fn & 1 || fn == sn) {
          pair = cat([1], p, h);
          while (!(fn & 1) && fn) { fn >>= 1; sn >>= 1; }
        } else {
          pair = cat([1], h, p);
        }
        fn >>= 1;
        sn >>= 1;
        return sha(pair);
      });
    });
    return r.then(function (h) {
      if (sn != 0) throw new Error('proof too short');
      return h;
    });
  }

  /* A C2SP signed note: its text (through the last newline before the blank line), the
     checkpoint in it (origin, size, root) and its signature lines. */
  function parseNote(note) {
    var cut = note.indexOf('\n\n'), text = note.slice(0, cut + 1), lines = text.split('\n');
    return {
      text: text, origin: lines[0], size: +lines[1], root: unb64(lines[2]),
      sigs: note.slice(cut + 2).split('\n').filter(Boolean)
    };
  }

  /* 'ok', 'bad', or 'na' when this browser has no Ed25519 in WebCrypto. The key is
     <name>+<hex key ID>+<base64(0x01 || public key)>; the ID is the first 4 bytes of
     SHA-256(name || "\n" || 0x01 || public key), and starts the signature line's bytes. */
  function checkSig(cp, vkey) {
    /* the name has no '+'; base64 may */
    var a = vkey.indexOf('+'), name = vkey.slice(0, a), id = vkey.slice(a + 1, a + 9);
    var key = vkey.charAt(a + 9) == '+' ? unb64(vkey.slice(a + 10)) : [];
    var line = cp.sigs.filter(function (l) { return l.indexOf('\u2014 ' + name + ' ') == 0; })[0];
    if (key.length != 33 || key[0] != 1 || !line) return Promise.resolve('bad');
    var sig = unb64(line.slice(name.length + 3));
    return sha(cat(enc.encode(name + '\n'), key)).then(function (h) {
      if (hex(h.slice(0, 4)) != id || hex(sig.slice(0, 4)) != id) return 'bad';
      return subtle.importKey('raw', key.slice(1), { name: 'Ed25519' }, false, ['verify']).then(function (k) {
        return subtle.verify({ name: 'Ed25519' }, k, sig.slice(4), enc.encode(cp.text)).then(function (ok) { return ok ? 'ok' : 'bad'; });
      }, function () { return 'na'; });
    });
  }

  /* The language links keep the receipt (after '#', never sent to the server). */
  [].forEach.call(d.querySelectorAll('.langs a'), function (a) { a.href += location.hash; });

  var secret = '', commit = '', tries = 0;
  try { secret = decodeURIComponent(location.hash.slice(1)); } catch (e) { /* not a receipt */ }
  if (!secret) return say('rc-status', t('rc_no_secret'), 'none');
  if (!subtle) return say('rc-status', t('rc_proof_bad'), 'bad');

  function look() {
    get(api + '/receipts/' + commit).then(found, function (e) {
      if (e.status == 404 && tries++ < 5) {
        say('rc-status', t('rc_pending'), 'pending');
        setTimeout(look, 2000);
      } else if (e.status == 404) {
        say('rc-status', t('rc_missing'), 'missing');
      } else {
        error(t(e.status == 503 ? 'err_busy' : 'err_network'));
      }
    });
  }

  function found(rc) {
    var cp = parseNote(rc.checkpoint), i = rc.index;
    say('rc-status', t('rc_' + rc.status), rc.status);
    $('rc-checks').hidden = false;
    say('rc-entry', t('rc_entry', { index: fmt(i), size: fmt(cp.size) }));
    $('rc-withdraw').hidden = rc.status == 'withdrawn';
    Promise.all([get(api + '/log?start=' + i + '&limit=1', 'arrayBuffer'), get(ds.key, 'text')]).then(function (got) {
      var line = new Uint8Array(got[0]), vkey = got[1].trim();
      if (line[line.length - 1] == 10) line = line.slice(0, -1);
      var entry = JSON.parse(new TextDecoder().decode(line));
      if (entry.commit !== commit || entry.i !== i || rc.inclusion.size !== cp.size ||
          cp.origin !== vkey.split('+')[0] + '/' + ds.statement) throw new Error('not this entry');
      return sha(cat([0], line)).then(function (leaf) {
        return rootFrom(i, cp.size, leaf, rc.inclusion.hashes.map(unb64));
      }).then(function (r) {
        if (!same(r, cp.root)) throw new Error('another root');
        say('rc-proof', t('rc_proof_ok'), 'ok');
        return checkSig(cp, vkey).then(function (s) { say('rc-sig', t('rc_sig_' + s, { key: vkey }), s); });
      });
    }).catch(function () { say('rc-proof', t('rc_proof_bad'), 'bad'); });
  }

  sha(enc.encode(secret)).then(function (h) {
    commit = hex(h);
    look();
  });

  $('rc-ask').addEventListener('click', function () {
    this.hidden = true;
    $('rc-confirm').hidden = false;
    $('rc-yes').focus();
  });
  $('rc-yes').addEventListener('click', function () {
    var b = this;
    b.disabled = true;
    error('');
    fetch(api + '/withdrawals', {
      method: 'POST', cache: 'no-store',
      headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ secret: secret })
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw { status: r.status };
        $('rc-withdraw').hidden = true;
        say('rc-status', t('rc_withdrawn_now', { count: fmt(body.count) }), 'withdrawn');
      });
    }).catch(function (e) {
      b.disabled = false;
      error(t(e && e.status == 429 ? 'err_rate' : e && e.status == 503 ? 'err_busy' : 'err_network'));
    });
  });
})();
