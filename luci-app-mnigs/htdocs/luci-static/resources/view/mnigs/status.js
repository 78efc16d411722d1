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

function text(v) {
	return (v === null || v === undefined || v === '') ? '-' : String(v);
}

function ago(s) {
	if (s === null || s === undefined)
		return '-';
	return s < 90 ? _('%d s ago').format(s) : _('%d min ago').format(Math.round(s / 60));
}

function result(r, done) {
	if (r && r.success === false)
		ui.addNotification(null, E('p', _('mnigs: %s').format(r.errorMsg || _('failed'))), 'danger');
	else
		ui.addNotification(null, E('p', done), 'info');
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
			return E('p', { 'class': 'alert-message warning' }, _('The mnigs daemon is not running.'));
		if (st.success === false)
			return E('p', { 'class': 'alert-message warning' }, text(st.errorMsg));
		if (!sub)
			return E('p', {}, _('The subscriber role is disabled on this node.'));
		var gw = sub.gateway;
		var rows = [
			[ _('State'), text(sub.state) ],
			[ _('Gateway'), gw ? '%s (%s)'.format(gw.name, gw.address) : '-' ],
			[ _('Tunnel'), sub.interface ? '%s, %s'.format(sub.interface, sub.method) : '-' ],
			[ _('Address'), [ sub.ipv4, sub.ipv6 ].filter(Boolean).join(', ') || '-' ],
			[ _('Lease left'), sub.leaseLeft !== undefined ? _('%d s').format(sub.leaseLeft) : '-' ]
		];
		// Shown when the daemon reports them (hot standby and link quality).
		if (sub.standby)
			rows.push([ _('Standby'), text(sub.standby.name || sub.standby) ]);
		if (sub.quality)
			rows.push([ _('Quality'), text(sub.quality.score !== undefined ? sub.quality.score : JSON.stringify(sub.quality)) ]);
		rows.push([ _('Last error'), text(sub.lastError) ]);
		return E('table', { 'class': 'table' }, rows.map(function(r) {
			return E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td left', 'width': '33%' }, r[0]),
				E('td', { 'class': 'td left' }, r[1])
			]);
		}));
	},

	renderGateways: function(st, list) {
		var self = this;
		var current = st.subscriber && st.subscriber.gateway ? st.subscriber.gateway.address : null;
		var table = E('table', { 'class': 'table' }, [
			E('tr', { 'class': 'tr table-titles' }, [
				E('th', { 'class': 'th' }, _('Name')),
				E('th', { 'class': 'th' }, _('Address')),
				E('th', { 'class': 'th' }, _('Found by')),
				E('th', { 'class': 'th' }, _('Load')),
				E('th', { 'class': 'th' }, _('Score')),
				E('th', { 'class': 'th' }, _('Seen')),
				E('th', { 'class': 'th cbi-section-actions' }, '')
			])
		]);
		var rows = (list || []).map(function(g) {
			var terms = (g.info || {}).terms || {};
			var action = (g.address === current) ? _('in use') : E('button', {
				'class': 'btn cbi-button cbi-button-apply',
				'click': ui.createHandlerFn(self, 'handleConnect', g.address, g.port)
			}, _('Connect'));
			return [
				text(g.name),
				'%s:%d'.format(g.address, g.port),
				text(g.how),
				terms.maxSubscribers ? '%d/%d'.format(terms.subscribers, terms.maxSubscribers) : '-',
				text(g.score !== undefined ? g.score : (g.quality || {}).score),
				ago(g.seenAgo),
				action
			];
		});
		cbi_update_table(table, rows, E('em', _('No gateway found yet; press Scan.')));
		return table;
	},

	renderSessions: function(list) {
		var table = E('table', { 'class': 'table' }, [
			E('tr', { 'class': 'tr table-titles' }, [
				E('th', { 'class': 'th' }, _('Subscriber')),
				E('th', { 'class': 'th' }, _('Address')),
				E('th', { 'class': 'th' }, _('Method')),
				E('th', { 'class': 'th' }, _('Tunnel address')),
				E('th', { 'class': 'th' }, _('Expires in'))
			])
		]);
		cbi_update_table(table, (list || []).map(function(s) {
			return [ text(s.name), text(s.address), text(s.method),
				[ s.ipv4, s.ipv6 ].filter(Boolean).join(', '), _('%d s').format(s.expiresIn) ];
		}), E('em', _('No subscribers.')));
		return table;
	},

	renderAll: function(data) {
		var st = data[0] || {}, gws = data[1] || {}, sess = data[2] || {};
		return E('div', {}, [
			E('div', { 'class': 'cbi-section' }, [
				E('h3', _('Internet access')),
				this.renderAccess(st)
			]),
			E('div', { 'class': 'cbi-section' }, [
				E('h3', _('Gateways')),
				this.renderGateways(st, gws.gateways)
			]),
			E('div', { 'class': 'cbi-section' }, [
				E('h3', _('Subscribers of this gateway')),
				this.renderSessions(sess.sessions)
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
			E('h2', _('Mesh Internet Gateway')),
			E('div', { 'class': 'cbi-page-actions' }, [
				E('button', {
					'class': 'btn cbi-button cbi-button-action',
					'click': ui.createHandlerFn(this, 'handleScan')
				}, _('Scan')),
				' ',
				E('button', {
					'class': 'btn cbi-button cbi-button-reset',
					'click': ui.createHandlerFn(this, 'handleDisconnect')
				}, _('Disconnect'))
			]),
			body
		]);
	},

	handleSaveApply: null,
	handleSave: null,
	handleReset: null
});
