'use strict';
'require view';
'require rpc';
'require poll';
'require ui';
'require dom';

// Status of mnigs: our Internet access, the gateways we know (with a Connect button each), the
// subscribers of this gateway, and Scan / Disconnect. Everything comes from the rpcd plugin
// luci.mnigs, which asks the daemon through `mnigs ... --json`.

var callStatus = rpc.declare({ object: 'luci.mnigs', method: 'status', expect: { '': {} } });
var callGateways = rpc.declare({ object: 'luci.mnigs', method: 'gateways', expect: { '': {} } });
var callSessions = rpc.declare({ object: 'luci.mnigs', method: 'sessions', expect: { '': {} } });
var callScan = rpc.declare({ object: 'luci.mnigs', method: 'scan', expect: { '': {} } });
var callDisconnect = rpc.declare({ object: 'luci.mnigs', method: 'disconnect', expect: { '': {} } });
var callConnect = rpc.declare({
	object: 'luci.mnigs',
	method: 'connect',
	params: [ 'address', 'port' ],
	expect: { '': {} }
});

// Everything shown here that came from the daemon (names, addresses, error messages — some of it
// sent by other nodes on the mesh) goes into the page as text nodes, never as markup: LuCI's E()
// and cbi_update_table put plain strings into innerHTML.
function text(v) {
	return document.createTextNode((v === null || v === undefined || v === '') ? '-' : String(v));
}

function ago(s) {
	if (s === null || s === undefined)
		return text(null);
	return text(s < 90 ? _('%d s ago').format(s) : _('%d min ago').format(Math.round(s / 60)));
}

// "12.3 ms, 0 % lost" from a quality summary ({rttMs, loss}); '-' when there is none.
function quality(q) {
	if (!q || typeof q.loss !== 'number')
		return text(null);
	var rtt = (typeof q.rttMs === 'number') ? _('%s ms').format(q.rttMs.toFixed(1)) : _('no answer');
	return text(_('%s, %s %% lost').format(rtt, Math.round(q.loss * 100)));
}

function score(v) {
	return text((typeof v === 'number') ? v.toFixed(2) : null);
}

function result(r, done) {
	if (r && r.success === false)
		ui.addNotification(null, E('p', {}, text(_('mnigs: %s').format(r.errorMsg || _('failed')))), 'danger');
	else
		ui.addNotification(null, E('p', {}, text(done)), 'info');
}

var SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs) {
	var n = document.createElementNS(SVG, tag);
	for (var k in attrs)
		n.setAttribute(k, attrs[k]);
	return n;
}

// RTT of the gateway in use, one sample per refresh, drawn as an SVG line (newest right).
function rttChart(samples) {
	var w = 600, h = 120, pad = 30;
	var vals = samples.filter(function(x) { return x.rtt != null; }).map(function(x) { return x.rtt; });
	var max = Math.max.apply(null, vals.concat([ 1 ])) * 1.2;
	var n = Math.max(samples.length - 1, 1);
	var root = svg('svg', { 'width': w, 'height': h, 'viewBox': '0 0 %d %d'.format(w, h), 'id': 'mnigs-rtt-chart' });
	root.appendChild(svg('rect', { 'x': pad, 'y': 0, 'width': w - pad, 'height': h - 15, 'fill': 'none', 'stroke': '#ccc' }));
	var label = svg('text', { 'x': 0, 'y': 12, 'font-size': 11 });
	label.appendChild(document.createTextNode(_('%d ms').format(Math.ceil(max))));
	root.appendChild(label);
	var zero = svg('text', { 'x': 0, 'y': h - 17, 'font-size': 11 });
	zero.appendChild(document.createTextNode('0'));
	root.appendChild(zero);
	var points = [];
	samples.forEach(function(x, i) {
		var px = pad + (w - pad) * i / n;
		if (x.rtt == null) {
			root.appendChild(svg('line', { 'x1': px, 'x2': px, 'y1': 0, 'y2': h - 15, 'stroke': '#d9534f', 'class': 'lost' }));
			return;
		}
		points.push('%s,%s'.format(px.toFixed(1), ((h - 15) * (1 - x.rtt / max)).toFixed(1)));
	});
	root.appendChild(svg('polyline', { 'points': points.join(' '), 'fill': 'none', 'stroke': '#0069d6', 'stroke-width': 2 }));
	var foot = svg('text', { 'x': pad, 'y': h - 2, 'font-size': 11 });
	foot.appendChild(document.createTextNode(_('RTT of the gateway in use, last %d refreshes').format(samples.length)));
	root.appendChild(foot);
	return root;
}

return view.extend({
	load: function() {
		return Promise.all([ callStatus(), callGateways(), callSessions() ]);
	},

	handleScan: function(ev) {
		return callScan().then(function(r) {
			result(r, _('Scan done: %d gateway(s) answered.').format((r.gateways || []).length));
		});
	},

	handleDisconnect: function(ev) {
		return callDisconnect().then(function(r) {
			result(r, r.left ? _('Left %s.').format(r.left) : _('Disconnected.'));
		});
	},

	handleConnect: function(address, port, ev) {
		return callConnect(address, port).then(function(r) {
			result(r, _('Connected to %s.').format(r.gateway));
		});
	},

	renderAccess: function(st) {
		var sub = st.subscriber;
		if (st.notRunning)
			return E('p', { 'class': 'alert-message warning' }, text(_('The mnigs daemon is not running.')));
		if (st.success === false)
			return E('p', { 'class': 'alert-message warning' }, text(st.errorMsg));
		if (!sub)
			return E('p', {}, text(_('The subscriber role is disabled on this node.')));
		var gw = sub.gateway;
		var rows = [
			[ _('State'), text(sub.state) ],
			[ _('Gateway'), text(gw ? '%s (%s)'.format(gw.name, gw.address) : null) ],
			[ _('Tunnel'), text(sub.interface ? '%s, %s'.format(sub.interface, sub.method) : null) ],
			[ _('Address'), text([ sub.ipv4, sub.ipv6 ].filter(Boolean).join(', ')) ],
			[ _('Lease left'), text(sub.leaseLeft != null ? _('%d s').format(sub.leaseLeft) : null) ]
		];
		if (gw) {
			rows.push([ _('Quality'), quality(gw.quality) ]);
			rows.push([ _('Score'), score(gw.score) ]);
		}
		if (sub.standby)
			rows.push([ _('Standby'), text('%s (%s)'.format(sub.standby.name, sub.standby.address)) ]);
		rows.push([ _('Last error'), text(sub.lastError) ]);
		return E('table', { 'class': 'table', 'id': 'mnigs-access' }, rows.map(function(r) {
			return E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td left', 'width': '33%' }, text(r[0])),
				E('td', { 'class': 'td left' }, r[1])
			]);
		}));
	},

	renderGateways: function(st, list) {
		var self = this;
		var sub = st.subscriber || {};
		var current = sub.gateway ? sub.gateway.address : null;
		// Scores are the subscriber's ranking of the gateways that answered the last scan (lower is better).
		var scores = {};
		(sub.ranking || []).forEach(function(r) { scores[r.name] = r.score; });
		var table = E('table', { 'class': 'table', 'id': 'mnigs-gateways' }, [
			E('tr', { 'class': 'tr table-titles' }, [
				E('th', { 'class': 'th' }, text(_('Name'))),
				E('th', { 'class': 'th' }, text(_('Address'))),
				E('th', { 'class': 'th' }, text(_('Found by'))),
				E('th', { 'class': 'th' }, text(_('Load'))),
				E('th', { 'class': 'th' }, text(_('Quality'))),
				E('th', { 'class': 'th' }, text(_('Score'))),
				E('th', { 'class': 'th' }, text(_('Seen'))),
				E('th', { 'class': 'th cbi-section-actions' }, document.createTextNode(''))
			])
		]);
		var rows = (Array.isArray(list) ? list : []).map(function(g) {
			var terms = (g.info || {}).terms || {};
			// A node is listed once, with every address it was found at.
			var addrs = (Array.isArray(g.addresses) && g.addresses.length) ? g.addresses : [ g.address ];
			var inUse = (g.address === current) || addrs.indexOf(current) >= 0;
			var action = inUse ? text(_('in use')) : E('button', {
				'class': 'btn cbi-button cbi-button-apply',
				'click': ui.createHandlerFn(self, 'handleConnect', g.address, g.port)
			}, text(_('Connect')));
			return [
				text(g.name),
				text(addrs.map(function(a) {
					return (String(a).indexOf(':') >= 0 ? '[%s]:%s' : '%s:%s').format(a, g.port);
				}).join(' · ')),
				text(g.how),
				text(terms.maxSubscribers ? '%s/%s'.format(terms.subscribers, terms.maxSubscribers) : null),
				quality(g.quality),
				score(scores[g.name]),
				ago(g.seenAgo),
				action
			];
		});
		cbi_update_table(table, rows, E('em', {}, text(st.subscriber ? _('No gateway found yet; press Scan.') :
			_('None: only the subscriber role looks for gateways.'))));
		return table;
	},

	// This node as a gateway: what it offers and how its uplink is.
	renderOffer: function(gw) {
		var terms = gw.terms || {}, uplink = gw.uplink || {}, check = gw.uplinkCheck || {};
		var health = (uplink.healthy === true) ? _('healthy') : (uplink.healthy === false) ? _('down') : null;
		var rows = [
			[ _('Offered methods'), text(Array.isArray(gw.methods) ? gw.methods.join(', ') : null) ],
			[ _('Subscribers'), text(terms.maxSubscribers != null ? '%s/%s'.format(terms.subscribers, terms.maxSubscribers) : null) ],
			[ _('Lease length'), text(terms.leaseSeconds != null ? _('%d s').format(terms.leaseSeconds) : null) ],
			[ _('Price'), text(terms.price) ],
			[ _('Bandwidth'), text(terms.bandwidthDown || terms.bandwidthUp ?
				_('%s / %s kbit/s').format(terms.bandwidthDown || '?', terms.bandwidthUp || '?') : null) ],
			[ _('Uplink'), text(health != null && uplink.checkedAgo != null ? _('%s, checked %s s ago').format(health, uplink.checkedAgo) : health) ],
			[ _('Uplink targets'), text(Array.isArray(uplink.targets) && uplink.targets.length ? uplink.targets.join(', ') : null) ],
			[ _('Uplink check'), text(check.state != null ? (check.problem != null ? '%s: %s'.format(check.state, check.problem) : check.state) : null) ]
		];
		return E('table', { 'class': 'table', 'id': 'mnigs-offer' }, rows.map(function(r) {
			return E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td left', 'width': '33%' }, text(r[0])),
				E('td', { 'class': 'td left' }, r[1])
			]);
		}));
	},

	renderSessions: function(list) {
		var table = E('table', { 'class': 'table', 'id': 'mnigs-sessions' }, [
			E('tr', { 'class': 'tr table-titles' }, [
				E('th', { 'class': 'th' }, text(_('Subscriber'))),
				E('th', { 'class': 'th' }, text(_('Address'))),
				E('th', { 'class': 'th' }, text(_('Method'))),
				E('th', { 'class': 'th' }, text(_('Tunnel address'))),
				E('th', { 'class': 'th' }, text(_('Expires in')))
			])
		]);
		cbi_update_table(table, (Array.isArray(list) ? list : []).map(function(s) {
			return [ text(s.name), text(s.address), text(s.method),
				text([ s.ipv4, s.ipv6 ].filter(Boolean).join(', ')),
				text(s.expiresIn != null ? _('%d s').format(s.expiresIn) : null) ];
		}), E('em', {}, text(_('No subscribers.'))));
		return table;
	},

	// Keeps the RTT of the gateway in use over the last 60 refreshes (5 minutes).
	sample: function(st) {
		var gw = (st.subscriber || {}).gateway;
		this.samples = this.samples || [];
		if (!gw) {
			this.samples = [];
			this.samplesOf = null;
			return;
		}
		if (this.samplesOf !== gw.name)
			this.samples = [];
		this.samplesOf = gw.name;
		var q = gw.quality || {};
		this.samples.push({ rtt: (typeof q.rttMs === 'number') ? q.rttMs : null });
		if (this.samples.length > 60)
			this.samples.shift();
	},

	renderAll: function(data) {
		var st = data[0] || {}, gws = data[1] || {}, sess = data[2] || {};
		this.sample(st);
		var access = [ E('h3', {}, text(_('Internet access'))), this.renderAccess(st) ];
		if (this.samples.length)
			access.push(E('div', { 'class': 'cbi-section-node' }, [ rttChart(this.samples) ]));
		return E('div', {}, [
			E('div', { 'class': 'cbi-section' }, access),
			E('div', { 'class': 'cbi-section' }, [
				E('h3', {}, text(_('Gateways'))),
				this.renderGateways(st, gws.gateways)
			]),
			E('div', { 'class': 'cbi-section' }, st.gateway ? [
				E('h3', {}, text(_('This gateway'))),
				this.renderOffer(st.gateway),
				E('h4', {}, text(_('Subscribers'))),
				this.renderSessions(sess.sessions)
			] : [
				E('h3', {}, text(_('This gateway'))),
				E('p', {}, text(_('The gateway role is disabled on this node.')))
			])
		]);
	},

	render: function(data) {
		var self = this;
		var body = E('div', { 'id': 'mnigs-status' }, this.renderAll(data));
		poll.add(function() {
			return self.load().then(function(fresh) {
				dom.content(body, self.renderAll(fresh));
			});
		}, 5);
		return E([], [
			E('h2', {}, text(_('Mesh Internet Gateway'))),
			// Scan, Disconnect and Connect act on the subscriber role.
			(data[0] || {}).subscriber ? E('div', { 'class': 'cbi-page-actions' }, [
				E('button', {
					'class': 'btn cbi-button cbi-button-action',
					'click': ui.createHandlerFn(this, 'handleScan')
				}, text(_('Scan'))),
				text(' '),
				E('button', {
					'class': 'btn cbi-button cbi-button-reset',
					'click': ui.createHandlerFn(this, 'handleDisconnect')
				}, text(_('Disconnect')))
			]) : E([]),
			body
		]);
	},

	handleSaveApply: null,
	handleSave: null,
	handleReset: null
});
