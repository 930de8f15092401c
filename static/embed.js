/* Undersign loader: see embed/README.md */
(function (w, d) {
  var me = d.currentScript;
  if (!me || !me.src) return;
  var O = new URL(me.src).origin, K = 'undersign:' + O, api = w[K];
  if (!api) {
    var seen = new WeakSet(), frames = [];
    var T = { ru: 'Поддержать заявление', kk: 'Мәлімдемені қолдау', de: 'Erklärung unterstützen', fr: 'Soutenir la déclaration' };
    var css = function (f, k, v) { f.style.setProperty(k, v, 'important'); };
    var mount = function (el, after) {
      var o = el.dataset, id = o.statement || o.endorseStatement;
      if (!id || seen.has(el)) return;
      seen.add(el);
      var lang = o.lang || navigator.languages.join(',');
      var lay = o.layout || 'full', c = lay == 'counter', f = d.createElement('iframe');
      f.title = T[lang.slice(0, 2).toLowerCase()] || 'Endorse the statement';
      f.referrerPolicy = 'no-referrer';
      f.allow = 'clipboard-write' + (navigator.share ? ';web-share' : '');
      f.style.cssText = ('display:block;border:0;margin:0;padding:0;overflow:hidden;float:none;min-width:0;' +
        'min-height:0;max-height:none;opacity:1;visibility:visible;position:static;transform:none;filter:none;pointer-events:auto;transition:none;' +
        'box-sizing:border-box;color-scheme:normal;background:none;' +
        (c ? 'width:240px;max-width:100%;height:44px;border-radius:99px;' : 'width:100%;max-width:640px;border-radius:14px;')
      ).replace(/;/g, '!important;');
      f.loading = 'lazy';
      f.src = O + '/embed/' + encodeURIComponent(id) + '?' + new URLSearchParams({
        lang: lang, theme: o.theme || 'auto', layout: lay, origin: location.origin
      });
      f.addEventListener('load', function () {
        f.contentWindow.postMessage({ ns: 'undersign', type: 'hello' }, O);
      });
      frames.push(f);
      after ? el.parentNode.insertBefore(f, el.nextSibling) : el.appendChild(f);
      var r = f.getBoundingClientRect();
      c || css(f, 'height', (lay == 'compact' ? 170 : r.width < 560 ? 940 : 720) + 'px');
      if (r.width && r.top < innerHeight) f.loading = 'eager';
    };
    w.addEventListener('message', function (e) {
      var m = e.data;
      if (e.origin !== O || !m || m.ns !== 'undersign') return;
      frames.forEach(function (f) {
        if (f.contentWindow !== e.source) return;
        if (m.type == 'size') {
          css(f, 'height', Math.min(Math.max(m.h | 0, 24), 4000) + 'px');
          if (m.w > 0) css(f, 'width', Math.min(m.w | 0, 2000) + 'px');
        }
        if (typeof m.title == 'string') f.title = m.title.slice(0, 300);
      });
    });
    var scan = function () {
      d.querySelectorAll('[data-endorse-statement]').forEach(function (el) { mount(el); });
    };
    api = w[K] = { mount: mount, scan: scan };
    new MutationObserver(scan).observe(d.documentElement, { childList: true, subtree: true });
  }
  if (me.dataset.statement) api.mount(me, 1);
  api.scan();
})(window, document);
