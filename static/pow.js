/* Undersign proof-of-work solver, run in a Web Worker by widget.js: ALTCHA v2 with
   PBKDF2/SHA-256. It gets a challenge's parameters and answers with the counter whose
   derived key starts with the challenge's prefix ({counter, derivedKey}), or null. The
   password of each try is the nonce followed by the counter as a big-endian uint32. */
onmessage = function (e) {
  var p = e.data, s = crypto.subtle, n = 0;
  function bytes(hex) {
    var a = new Uint8Array(hex.length / 2);
    for (var i = 0; i < a.length; i++) a[i] = parseInt(hex.substr(i * 2, 2), 16);
    return a;
  }
  var nonce = bytes(p.nonce), salt = bytes(p.salt), pw = new Uint8Array(nonce.length + 4);
  var dv = new DataView(pw.buffer);
  pw.set(nonce);
  (function next() {
    dv.setUint32(nonce.length, n);
    s.importKey('raw', pw, 'PBKDF2', false, ['deriveBits']).then(function (k) {
      return s.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt: salt, iterations: p.cost }, k, (p.keyLength || 32) * 8);
    }).then(function (b) {
      var key = Array.prototype.map.call(new Uint8Array(b), function (x) { return (x < 16 ? '0' : '') + x.toString(16); }).join('');
      if (key.indexOf(p.keyPrefix) === 0) postMessage({ counter: n, derivedKey: key });
      else if (++n < 100000) next();
      else postMessage(null);
    }, function () { postMessage(null); });
  })();
};
