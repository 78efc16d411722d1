'use strict';
'require view';
'require form';
'require uci';
'require rpc';
'require ui';

// Settings of mnigs: /etc/config/mnigs, every option README documents, grouped in tabs, with
// the limits the daemon checks (`mnigs check-config` names file and line of anything LuCI lets
// through). A save changes only what was edited: options hidden by a tab, by the chosen
// discovery method or by a dialog are kept as they are (`retain`), lists keep their order.

var METHODS = [
	[ 'wireguard', 'WireGuard' ],
	[ 'openvpn', 'OpenVPN' ],
	[ 'gre', 'GRE' ],
	[ 'ipip', 'IPIP' ],
	[ 'route', _('Plain routing (layer-2 mesh)') ],
	[ 'cjdns', 'cjdns IpTunnel' ],
	[ 'socks', _('SOCKS5 proxy (tun2socks)') ],
	[ 'softether', 'SoftEther VPN' ]
];

var DISCOVERY = [
	[ 'routes', _('Routing table') ],
	[ 'neighbours', _('Neighbours (ARP/NDP)') ],
	[ 'cjdns', 'cjdns' ],
	[ 'yggdrasil', 'Yggdrasil' ],
	[ 'gossip', _('Gossip (gateways other nodes know)') ]
];

var callCheck = rpc.declare({
	object: 'luci.mnigs',
	method: 'check',
	params: [ 'config' ],
	expect: { '': {} }
});

// The staged configuration as UCI text, as `uci export` would write it.
function uciText() {
	var q = function(v) { return "'" + String(v).replace(/'/g, "'\\''") + "'"; };
	var out = '';
	uci.sections('mnigs').forEach(function(s) {
		out += '\nconfig ' + s['.type'] + (s['.anonymous'] ? '' : ' ' + q(s['.name'])) + '\n';
		Object.keys(s).forEach(function(k) {
			if (k.charAt(0) === '.')
				return;
			if (Array.isArray(s[k]))
				s[k].forEach(function(v) { out += '\tlist ' + k + ' ' + q(v) + '\n'; });
			else
				out += '\toption ' + k + ' ' + q(s[k]) + '\n';
		});
	});
	return out;
}

// Absolute paths as the daemon checks them (validate::path): at most 4096 bytes, no control characters.
function absolutePath(section_id, value) {
	if (value == null || value === '')
		return true;
	return (value.charAt(0) === '/' && value.length <= 4096 && !/[\x00-\x1f\x7f]/.test(value)) ? true :
		_('An absolute path (starting with /), without control characters');
}

// Interface names as the daemon checks them (validate::ifname).
function interfaceName(section_id, value) {
	return (value == null || value === '' || (/^[A-Za-z0-9._][A-Za-z0-9._-]{0,14}$/.test(value) && value !== '.' && value !== '..')) ? true :
		_('1-15 characters of A-Z a-z 0-9 . _ -, not starting with - and not . or ..');
}

// Route protocols as the daemon checks them (validate::route_protocol): 0-255 or a lower-case name.
function routeProtocol(section_id, value) {
	return (value == null || value === '' || /^(0|[1-9][0-9]{0,2})$/.test(value) && +value <= 255 || /^[a-z][a-z0-9_-]{0,30}$/.test(value)) ? true :
		_('A number 0-255 or a name of lower-case letters, digits, _ and -');
}

// Node names as the daemon checks them (validate::node_name).
function nodeName(section_id, value) {
	return (value == null || value === '' || /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(value)) ? true :
		_('1-63 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit');
}

// prefer/exclude as the daemon reads them (config::model::gateway_ref): a mesh address or a node name.
function gatewayRef(section_id, value) {
	if (value != null && /:/.test(value) && /^[0-9A-Fa-f:.]+$/.test(value)) {
		try { if (new URL('http://[' + value + ']/').hostname.length > 2) return true; } catch (e) {}
	}
	return nodeName(section_id, value) === true ? true :
		_('A mesh address, or 1-63 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit');
}

// IP:PORT as Rust's SocketAddr reads it ([v6]:port for IPv6); localhost stands for 127.0.0.1.
function socketAddress(v) {
	v = v.replace(/^localhost:/, '127.0.0.1:');
	var m = /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(v), ok = false;
	if (m) {
		try { ok = new URL('http://[' + m[1] + ']/').hostname.length > 2; } catch (e) { ok = false; }
	}
	else if ((m = /^(\d+)\.(\d+)\.(\d+)\.(\d+):(\d+)$/.exec(v)) != null) {
		ok = m.slice(1, 5).every(function(o) { return /^(0|[1-9]\d{0,2})$/.test(o) && +o <= 255; });
		m = [ null, null, m[5] ];
	}
	return ok && +m[2] <= 65535;
}

// An admin API as the daemon checks it (admin_endpoint): IP:PORT, tcp://IP:PORT or, where
// allowed (Yggdrasil), unix:///PATH.
function adminEndpoint(unix) {
	return function(section_id, value) {
		if (value == null || value === '')
			return true;
		if (value.indexOf('unix://') === 0)
			return (unix && absolutePath(section_id, value.substr(7)) === true && value.charAt(7) === '/') ? true :
				_('unix:///PATH (Yggdrasil only)');
		return socketAddress(value.replace(/^tcp:\/\//, '')) ? true : _('IP:PORT or tcp://IP:PORT');
	};
}

// Adds an option with `retain` set, so that hiding it (tab, depends, dialog) never deletes it.
function add(s, tab, cls, name, title, description) {
	var o = tab ? s.taboption(tab, cls, name, title, description) : s.option(cls, name, title, description);
	o.retain = true;
	return o;
}

// A choice whose absence means its default: shown as the default and, unless changed, not
// written (LuCI would otherwise add the default to the file on every save).
function choice(s, tab, name, title, description, values, dflt) {
	var o = add(s, tab, form.ListValue, name, title, description);
	values.forEach(function(v) { o.value(v[0], v[1]); });
	o.default = dflt;
	o.cfgvalue = function(section_id) {
		var v = uci.get('mnigs', section_id, name);
		return (v == null) ? dflt : v;
	};
	return o;
}

// The methods a section lists, in the order given (DynamicList keeps the order; the subscriber
// tries them in that order).
function methodList(s, tab, description) {
	var o = add(s, tab, form.DynamicList, 'method', _('Tunnel methods'), description);
	METHODS.forEach(function(m) { o.value(m[0], m[1]); });
	return o;
}

// The name of the first section of a type (singleton sections may have any name), else the type.
function named(type) {
	var found = uci.sections('mnigs', type);
	return found.length ? found[0]['.name'] : type;
}

function used(method) {
	var lists = [ uci.get('mnigs', named('gateway'), 'method'), uci.get('mnigs', named('subscriber'), 'method') ];
	for (var i = 0; i < lists.length; i++) {
		var l = lists[i];
		if (Array.isArray(l) ? l.indexOf(method) >= 0 : l === method)
			return true;
	}
	return false;
}

return view.extend({
	load: function() {
		return uci.load('mnigs');
	},

	// Save & Apply: after LuCI's own checks, the daemon checks the configuration that would be
	// applied (`mnigs check-config`, through the plugin); on errors nothing is applied and its
	// messages are shown (the changes stay saved, to be corrected).
	handleSaveApply: function(ev, mode) {
		return this.handleSave(ev).then(function() {
			return callCheck(uciText());
		}).then(function(r) {
			// No verdict (the plugin could not run mnigs): apply as LuCI would; the daemon still
			// refuses a file with errors on reload and keeps running with the old one.
			if (!r || !Array.isArray(r.problems)) {
				ui.addNotification(null, E('p', {}, document.createTextNode(
					_('mnigs could not check the configuration (%s); applied unchecked.').format((r && r.errorMsg) || _('no answer')))), 'warning');
				ui.changes.apply(mode == '0');
				return;
			}
			var problems = r.problems;
			var list = E('ul', {}, problems.map(function(p) {
				return E('li', {}, document.createTextNode('%s: %s: %s'.format(p.severity, p.place || _('file'), p.message)));
			}));
			if (r.success !== true) {
				ui.addNotification(_('mnigs refuses this configuration; nothing was applied'),
					[ E('p', {}, document.createTextNode(r.errorMsg || _('Correct the settings below and press Save & Apply again.'))), list ],
					'danger');
				return;
			}
			if (problems.length)
				ui.addNotification(_('mnigs warns about this configuration'), list, 'warning');
			ui.changes.apply(mode == '0');
		});
	},

	render: function() {
		var m, s, o;

		m = new form.Map('mnigs', _('Mesh Internet Gateway'),
			_('Share this router\'s Internet access with the mesh, or use a gateway someone else shares.'));

		// --- node ---
		s = m.section(form.NamedSection, named('mnigs') === 'mnigs' ? 'main' : named('mnigs'), 'mnigs', _('Node'));
		s.addremove = false;
		s.tab('general', _('General'));
		s.tab('rpc', _('RPC server'));
		s.tab('storage', _('Storage'));
		o = add(s, 'general', form.Value, 'name', _('Node name'), _('What other nodes see; empty means the host name.'));
		o.validate = nodeName;
		choice(s, 'general', 'log_level', _('Log level'), null,
			[ [ 'error', 'error' ], [ 'warn', 'warn' ], [ 'info', 'info' ], [ 'debug', 'debug' ] ], 'info');
		choice(s, 'general', 'web', _('Built-in page for others'),
			_('What callers outside the authorized networks get from http://node:65533/.'),
			[ [ 'off', _('Nothing') ], [ 'readonly', _('Read only') ], [ 'full', _('Full control (trusted mesh only)') ] ], 'off');
		o = add(s, 'rpc', form.Value, 'rpc_port', _('RPC port'), _('TCP port of the JSON-RPC server and of the built-in page.'));
		o.datatype = 'port';
		o.placeholder = '65533';
		o = add(s, 'rpc', form.DynamicList, 'listen', _('Listen on'), _('Addresses the server listens on; :: is every address.'));
		o.datatype = 'ipaddr';
		o.placeholder = '::';
		o = add(s, 'rpc', form.DynamicList, 'listen_interface', _('Listen on interfaces'),
			_('Interfaces the server answers on (loopback always); empty: the mesh interfaces, never the WAN; * for every interface.'));
		o.validate = function(section_id, value) { return value === '*' ? true : interfaceName(section_id, value); };
		o = add(s, 'rpc', form.DynamicList, 'authorized_network', _('Authorized networks'),
			_('Callers from these networks may control the node (scan, connect, disconnect).'));
		o.datatype = 'cidr';
		o = add(s, 'rpc', form.DynamicList, 'hostname', _('Host names'),
			_('Names (or a port forward\'s address) the page is reached by; other names are refused (DNS rebinding).'));
		o.datatype = 'or(hostname,ipaddr)';
		o = add(s, 'rpc', form.Value, 'rate_limit', _('Requests per second'), _('Per source address (IPv6: per /64); 0 = no limit.'));
		o.datatype = 'range(0,100000)';
		o.placeholder = '20';
		o = add(s, 'rpc', form.Value, 'rate_burst', _('Burst'), _('Requests allowed in one burst.'));
		o.datatype = 'range(1,100000)';
		o.placeholder = '40';
		o = add(s, 'rpc', form.Value, 'max_connections', _('Connections at once'));
		o.datatype = 'range(1,10000)';
		o.placeholder = '64';
		o = add(s, 'rpc', form.Value, 'read_timeout', _('Read timeout'), _('Seconds a client has to send its whole request.'));
		o.datatype = 'range(1,3600)';
		o.placeholder = '10';
		o = add(s, 'storage', form.Value, 'database', _('Database'), _('SQLite file for gateways seen and sessions (RAM).'));
		o.validate = absolutePath;
		o.placeholder = '/var/lib/mnigs/mnigs.db';
		o = add(s, 'storage', form.Value, 'persist_path', _('Flash copy'), _('Copy of the database kept across reboots; empty for none.'));
		o.validate = absolutePath;
		o = add(s, 'storage', form.Value, 'persist_interval', _('Copy interval'), _('Seconds between copies (only when changed), and at shutdown.'));
		o.datatype = 'range(1,604800)';
		o.placeholder = '3600';

		// --- gateway ---
		s = m.section(form.NamedSection, named('gateway'), 'gateway', _('Gateway'),
			_('Offer this router\'s Internet uplink to mesh nodes.'));
		s.addremove = true;
		s.tab('general', _('General'));
		s.tab('addresses', _('Addresses'));
		s.tab('offer', _('Offer'));
		s.tab('uplink', _('Uplink check'));
		o = add(s, 'general', form.Flag, 'enabled', _('Enabled'));
		o.rmempty = false;
		o = add(s, 'general', form.Value, 'wan_interface', _('Uplink interface'), _('Interface towards the Internet; NAT goes out of here.'));
		o.validate = interfaceName;
		methodList(s, 'general', _('What this gateway offers.'));
		o = add(s, 'general', form.Value, 'max_subscribers', _('Maximum subscribers'));
		o.datatype = 'range(1,65535)';
		o.placeholder = '10';
		o = add(s, 'general', form.Value, 'max_sessions_per_source', _('Sessions per source'),
			_('Sessions one IPv4 address or IPv6 /64 may hold.'));
		o.datatype = 'range(1,65535)';
		o.placeholder = '4';
		o = add(s, 'general', form.Value, 'lease_seconds', _('Lease length'), _('Seconds; subscribers renew a third of the way through.'));
		o.datatype = 'range(5,86400)';
		o.placeholder = '300';
		o = add(s, 'general', form.Flag, 'keep_sessions', _('Keep sessions over restarts'), _('Off: a stop releases every subscriber.'));
		o.default = '1';
		o = add(s, 'general', form.DynamicList, 'mesh_interface', _('Mesh interfaces'),
			_('Nothing arriving here reaches the WAN or LAN without a lease; empty: the discovery sections\' interfaces.'));
		o.validate = interfaceName;
		o = add(s, 'general', form.DynamicList, 'allow_destination', _('Allowed private destinations'),
			_('Private networks subscribers may reach all the same; default: none.'));
		o.datatype = 'cidr';
		o = add(s, 'addresses', form.Value, 'ipv4_pool', _('IPv4 pool'), _('Tunnel addresses for subscribers; at least a /30.'));
		o.datatype = 'cidr4';
		o.placeholder = '100.127.0.0/24';
		o = add(s, 'addresses', form.Value, 'ipv6_pool', _('IPv6 pool'), _('Empty for IPv4 only.'));
		o.datatype = 'cidr6';
		choice(s, 'addresses', 'nat', _('NAT backend'), null,
			[ [ 'auto', _('automatic') ], [ 'nft', 'nftables' ], [ 'iptables', 'iptables' ] ], 'auto');
		o = add(s, 'offer', form.Value, 'price', _('Price'), _('0 for free.'));
		o.datatype = 'uinteger';
		o.placeholder = '0';
		o = add(s, 'offer', form.Value, 'bandwidth_down', _('Bandwidth down'), _('Shared towards subscribers, kbit/s (a bit below the uplink): fair shares; 0: not shaped.'));
		o.datatype = 'uinteger';
		o.placeholder = '0';
		o = add(s, 'offer', form.Value, 'bandwidth_up', _('Bandwidth up'), _('Shared from subscribers out of the WAN, kbit/s: fair shares; 0: not shaped.'));
		o.datatype = 'uinteger';
		o.placeholder = '0';
		o = add(s, 'uplink', form.Flag, 'uplink_check', _('Check the uplink'), _('Off: the uplink is assumed healthy, and the status says so.'));
		o.default = '1';
		o = add(s, 'uplink', form.DynamicList, 'uplink_target', _('Check targets'), _('Pinged out of the uplink interface and advertised to subscribers, who probe them through their tunnels; none: 1.1.1.1, 8.8.8.8, 9.9.9.9 (counted once one has answered).'));
		o.datatype = 'ipaddr';
		o = add(s, 'uplink', form.Value, 'uplink_interval', _('Check interval'), _('Seconds between uplink checks.'));
		o.datatype = 'range(1,3600)';
		o.placeholder = '5';

		// --- subscriber ---
		s = m.section(form.NamedSection, named('subscriber'), 'subscriber', _('Subscriber'),
			_('Find gateways on the mesh and route Internet traffic through the best one.'));
		s.addremove = true;
		s.tab('general', _('General'));
		s.tab('choice', _('Choice of gateway'));
		s.tab('probing', _('Probing and failover'));
		s.tab('hooks', _('Hooks'));
		o = add(s, 'general', form.Flag, 'enabled', _('Enabled'));
		o.rmempty = false;
		methodList(s, 'general', _('Accepted methods, in order of preference.'));
		o = add(s, 'general', form.Value, 'scan_interval', _('Scan interval'), _('Seconds between scans.'));
		o.datatype = 'range(1,86400)';
		o.placeholder = '300';
		o = add(s, 'general', form.Value, 'negative_cache', _('Skip silent nodes'), _('Seconds a node that keeps not answering is left out of scans (a manual scan asks everyone); 0 asks every node every time.'));
		o.datatype = 'range(0,86400)';
		o.placeholder = '600';
		o = add(s, 'general', form.Flag, 'fail_closed', _('Fail closed'), _('No gateway up: Internet traffic is dropped, the mesh stays reachable.'));
		o = add(s, 'choice', form.Value, 'max_price', _('Highest price'), _('0: only free gateways.'));
		o.datatype = 'uinteger';
		o.placeholder = '0';
		o = add(s, 'choice', form.Value, 'prefer', _('Preferred gateway'), _('Mesh address (that node only) or node name (any node using it); used while it is usable.'));
		o.validate = gatewayRef;
		o = add(s, 'choice', form.DynamicList, 'exclude', _('Never use'), _('Mesh addresses or node names.'));
		o.validate = gatewayRef;
		o = add(s, 'choice', form.DynamicList, 'grant_allow', _('Allowed tunnel addresses'),
			_('Where a gateway\'s granted addresses may lie; empty: 100.64.0.0/10 and fc00::/7.'));
		o.datatype = 'cidr';
		o = add(s, 'choice', form.Value, 'failback_after', _('Fail back after'), _('Seconds a better gateway must be stable before we move back.'));
		o.datatype = 'range(0,86400)';
		o.placeholder = '60';
		// The daemon reads probe_interval_ms; the older probe_interval (seconds) only when
		// probe_interval_ms is absent. The form shows the value in effect and, when edited,
		// writes probe_interval_ms and drops probe_interval so that exactly one is set.
		o = add(s, 'probing', form.Value, 'probe_interval_ms', _('Probe interval (ms)'), _('Between checks of the gateway in use; 125 with hot standby, else 200. After a miss the next check goes at once; never more than 10 a second.'));
		o.datatype = 'range(50,60000)';
		o.placeholder = '200';
		o.cfgvalue = function(section_id) {
			var ms = uci.get('mnigs', section_id, 'probe_interval_ms');
			var sec = uci.get('mnigs', section_id, 'probe_interval');
			if (ms == null && sec != null && /^\d+$/.test(sec))
				return String(+sec * 1000);
			return ms;
		};
		o.write = function(section_id, value) {
			uci.unset('mnigs', section_id, 'probe_interval');
			uci.set('mnigs', section_id, 'probe_interval_ms', value);
		};
		o.remove = function(section_id) {
			uci.unset('mnigs', section_id, 'probe_interval');
			uci.unset('mnigs', section_id, 'probe_interval_ms');
		};
		o = add(s, 'probing', form.Value, 'down_after', _('Down after'), _('Failed probe intervals in a row before the gateway counts as down.'));
		o.datatype = 'range(1,100)';
		o.placeholder = '3';
		o = add(s, 'probing', form.DynamicList, 'probe_target', _('Probe targets'), _('Probed through the tunnel; none: the gateway\'s tunnel address.'));
		o.datatype = 'ipaddr';
		o = add(s, 'probing', form.Flag, 'hot_standby', _('Hot standby'), _('A second tunnel stays up; failover is one rule switch.'));
		[
			[ 'on_connect', _('On connect'), _('Run when the tunnel is up.') ],
			[ 'on_disconnect', _('On disconnect'), _('Run when the tunnel is down.') ],
			[ 'on_register', _('On register'), _('Run when a gateway granted a lease.') ],
			[ 'on_release', _('On release'), _('Run when the lease was given back.') ],
			[ 'on_failover', _('On failover'), _('Run when the gateway was lost.') ]
		].forEach(function(h) {
			o = add(s, 'hooks', form.Value, h[0], h[1],
				h[2] + ' ' + _('An executable (absolute path), run with MNIGS_* variables in its environment.'));
			o.validate = absolutePath;
		});
		o = add(s, 'hooks', form.Value, 'hook_timeout', _('Hook timeout'), _('Seconds before a hook is killed.'));
		o.datatype = 'range(1,3600)';
		o.placeholder = '10';

		// --- discovery: one row per section, method-specific options in the dialog ---
		s = m.section(form.GridSection, 'discovery', _('Discovery'),
			_('Ways of finding gateways; each section is tried on every scan.'));
		s.addremove = true;
		s.anonymous = false;
		s.nodescriptions = true;
		choice(s, null, 'method', _('Method'), null, DISCOVERY, 'routes');
		o = add(s, null, form.DynamicList, 'port', _('Ports'), _('RPC ports to probe; none: 65533.'));
		o.datatype = 'port';
		o.placeholder = '65533';
		o.textvalue = function(section_id) {
			var v = this.cfgvalue(section_id);
			return (Array.isArray(v) && v.length) ? v.join(', ') : (v ? v : '65533');
		};
		o = add(s, null, form.Value, 'timeout_ms', _('Probe timeout (ms)'));
		o.datatype = 'range(50,60000)';
		o.placeholder = '1500';
		o = add(s, null, form.Value, 'concurrency', _('Parallel probes'));
		o.datatype = 'range(1,1024)';
		o.placeholder = '64';
		o.modalonly = true;
		o = add(s, null, form.Value, 'protocol', _('Routing protocol'), _('Only routes of this protocol (babel, bird, olsr, a number, …); empty: any.'));
		o.validate = routeProtocol;
		o.depends('method', 'routes');
		o = add(s, null, form.Flag, 'route_gateways', _('Next hops too'), _('Also probe the next hops of non-host routes (e.g. OLSR HNA).'));
		o.depends('method', 'routes');
		o.modalonly = true;
		o = add(s, null, form.DynamicList, 'interface', _('Interfaces'), _('Only via these interfaces; none: any.'));
		o.validate = interfaceName;
		o.depends('method', 'routes');
		o.depends('method', 'neighbours');
		o.modalonly = true;
		o = add(s, null, form.DynamicList, 'prefix', _('Prefixes'), _('Only candidates inside these prefixes.'));
		o.datatype = 'cidr';
		o.depends('method', 'routes');
		o.depends('method', 'neighbours');
		o.modalonly = true;
		o = add(s, null, form.Value, 'sweep', _('Sweep'), _('Probe every host of this IPv4 prefix (at most 1,024 addresses).'));
		o.datatype = 'cidr4';
		o.depends('method', 'neighbours');
		o.modalonly = true;
		o = add(s, null, form.Value, 'admin', _('Admin API'), _('cjdns: HOST:PORT; Yggdrasil: unix:///var/run/yggdrasil/yggdrasil.sock or tcp://HOST:PORT.'));
		o.validate = adminEndpoint(true);
		o.depends('method', 'cjdns');
		o.depends('method', 'yggdrasil');
		o.modalonly = true;
		o = add(s, null, form.Value, 'password', _('Admin password'));
		o.password = true;
		o.depends('method', 'cjdns');
		o.modalonly = true;
		o = add(s, null, form.Value, 'cjdroute_conf', _('cjdroute.conf'), _('Admin password read from here unless set above.'));
		o.validate = absolutePath;
		o.depends('method', 'cjdns');
		o.modalonly = true;
		o = add(s, null, form.Value, 'max_depth', _('Search depth'));
		o.datatype = 'range(1,64)';
		o.placeholder = '8';
		o.depends('method', 'cjdns');
		o.depends('method', 'yggdrasil');
		o.modalonly = true;
		o = add(s, null, form.Value, 'max_nodes', _('Nodes at most'));
		o.datatype = 'range(1,1000000)';
		o.placeholder = '2000';
		o.depends('method', 'cjdns');
		o.depends('method', 'yggdrasil');
		o.modalonly = true;
		o = add(s, null, form.Flag, 'nodeinfo_only', _('Only nodes advertising mnigs'), _('In their Yggdrasil NodeInfo.'));
		o.depends('method', 'yggdrasil');
		o.modalonly = true;

		// --- tunnel methods: a section each, shown when a role lists the method or it exists ---
		var tunnels = [
			[ 'wireguard', _('WireGuard'), function(s) {
				o = add(s, null, form.Value, 'interface', _('Gateway interface'));
				o.validate = interfaceName;
				o.placeholder = 'mnigs-wg';
				o = add(s, null, form.Value, 'listen_port', _('Gateway UDP port'));
				o.datatype = 'port';
				o.placeholder = '51820';
				o = add(s, null, form.Value, 'client_interface', _('Subscriber interface'));
				o.validate = interfaceName;
				o.placeholder = 'mnigs-wgc';
				o = add(s, null, form.Value, 'client_listen_port', _('Subscriber UDP port'), _('With hot standby the second tunnel uses the next port.'));
				o.datatype = 'port';
				o.placeholder = '51821';
				o = add(s, null, form.Value, 'mtu', _('MTU'));
				o.datatype = 'range(1280,9000)';
				o.placeholder = '1420';
			} ],
			[ 'openvpn', _('OpenVPN'), function(s) {
				o = add(s, null, form.Value, 'interface', _('Gateway tun'));
				o.validate = interfaceName;
				o.placeholder = 'mnigs-ovpn';
				o = add(s, null, form.Value, 'client_interface', _('Subscriber tun'));
				o.validate = interfaceName;
				o.placeholder = 'mnigs-ovpnc';
				o = add(s, null, form.Value, 'port', _('Gateway UDP port'));
				o.datatype = 'port';
				o.placeholder = '1194';
				o = add(s, null, form.Value, 'mtu', _('MTU'));
				o.datatype = 'range(1280,9000)';
				o.placeholder = '1400';
				o = add(s, null, form.Value, 'directory', _('Directory'), _('CA, keys, client-config files, pid, log, management socket.'));
				o.validate = absolutePath;
				o.placeholder = '/etc/mnigs/openvpn';
			} ],
			[ 'iptunnel', _('GRE and IPIP'), function(s) {
				o = add(s, null, form.Value, 'interface_prefix', _('Gateway interface prefix'), _('At most 7 characters; 8 hex digits follow.'));
				o.validate = function(section_id, value) {
					return (value == null || value === '' || (/^[A-Za-z0-9._][A-Za-z0-9._-]{0,6}$/.test(value) && value !== '.' && value !== '..')) ? true :
						_('1-7 characters of A-Z a-z 0-9 . _ -, not starting with -');
				};
				o.placeholder = 'mnt';
				o = add(s, null, form.Value, 'client_interface', _('Subscriber interface'));
				o.validate = interfaceName;
				o.placeholder = 'mnigs-tun';
				o = add(s, null, form.Value, 'mtu', _('MTU'));
				o.datatype = 'range(1280,9000)';
				o.placeholder = '1400';
			} ],
			[ 'cjdns', _('cjdns IpTunnel'), function(s) {
				o = add(s, null, form.Value, 'cjdroute_conf', _('cjdroute.conf'), _('Admin password, bind and publicKey are read from it unless set here.'));
				o.validate = absolutePath;
				o.placeholder = '/etc/cjdroute.conf';
				o = add(s, null, form.Value, 'password', _('Admin password'));
				o.password = true;
				o = add(s, null, form.Value, 'admin', _('Admin API'), _('HOST:PORT; default: cjdroute.conf\'s admin.bind.'));
				o.validate = adminEndpoint(false);
				o.placeholder = '127.0.0.1:11234';
				o = add(s, null, form.Value, 'interface', _('cjdroute\'s tun'));
				o.validate = interfaceName;
				o.placeholder = 'tun0';
				o = add(s, null, form.Value, 'timeout_ms', _('Admin call timeout (ms)'));
				o.datatype = 'range(50,60000)';
				o.placeholder = '2000';
			} ],
			[ 'socks', _('SOCKS5 proxy (tun2socks)'), function(s) {
				o = add(s, null, form.Value, 'interface', _('Subscriber TUN'));
				o.validate = interfaceName;
				o.placeholder = 'mnigs-socks';
				o = add(s, null, form.Value, 'port', _('Gateway first TCP port'), _('Each subscriber gets its own SOCKS server on this port plus its place in the pool.'));
				o.datatype = 'port';
				o.placeholder = '10800';
				o = add(s, null, form.Value, 'listen', _('Gateway listen address'), _('The SOCKS servers listen here; :: for all addresses.'));
				o.datatype = 'ipaddr';
				o.placeholder = '::';
				o = add(s, null, form.Value, 'mtu', _('MTU'));
				o.datatype = 'range(1280,9000)';
				o.placeholder = '1500';
				o = add(s, null, form.Value, 'directory', _('Directory'), _('PID files and logs of the SOCKS servers and of tun2socks.'));
				o.validate = absolutePath;
				o.placeholder = '/var/run/mnigs/socks';
				o = add(s, null, form.Value, 'client', _('Subscriber tun2socks program'), _('hev-socks5-tunnel (OpenWrt\'s package) or tun2proxy-bin: a name on PATH or an absolute path ending in one of them.'));
				o.validate = function(section_id, value) {
					return (value == null || value === '' || /^(\/[^\s]*\/)?(hev-socks5-tunnel|tun2proxy|tun2proxy-bin)$/.test(value)) ? true : _('hev-socks5-tunnel, tun2proxy or tun2proxy-bin, as a name or an absolute path');
				};
				o.placeholder = 'tun2proxy-bin';
			} ],
			[ 'softether', _('SoftEther VPN'), function(s) {
				var shortName = function(section_id, value) {
					return (value == null || value === '' || /^[A-Za-z0-9]{1,11}$/.test(value)) ? true : _('1-11 letters and digits');
				};
				o = add(s, null, form.Value, 'admin', _('Gateway: server admin address'), _('IP:PORT of the SoftEther server\'s admin port.'));
				o.validate = function(section_id, value) {
					if (value == null || value === '')
						return true;
					var octet = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
					var m = new RegExp('^' + octet + '(\\.' + octet + '){3}:([1-9][0-9]{0,4})$').exec(value);
					return (m && +m[m.length - 1] <= 65535) ? true : _('IPV4:PORT, e.g. 127.0.0.1:5555');
				};
				o.placeholder = '127.0.0.1:5555';
				o = add(s, null, form.Value, 'admin_password', _('Gateway: server admin password'));
				o.password = true;
				o = add(s, null, form.Value, 'hub', _('Gateway: Virtual Hub'));
				o.validate = function(section_id, value) {
					return (value == null || value === '' || /^[A-Za-z0-9]{1,48}$/.test(value)) ? true : _('1-48 letters and digits');
				};
				o.placeholder = 'mnigs';
				o = add(s, null, form.Value, 'port', _('Gateway: server TCP port'), _('The port subscribers connect to.'));
				o.datatype = 'port';
				o.placeholder = '443';
				o = add(s, null, form.Value, 'device', _('Gateway: bridge device'), _('The tap interface is tap_ + this name.'));
				o.validate = shortName;
				o.placeholder = 'mnigs';
				o = add(s, null, form.Value, 'client_nic', _('Subscriber: client NIC'), _('The interface is vpn_ + this name.'));
				o.validate = shortName;
				o.placeholder = 'mnigs';
				o = add(s, null, form.Value, 'vpncmd', _('vpncmd program'));
				o.placeholder = 'vpncmd';
				o = add(s, null, form.Value, 'directory', _('Directory'), _('Command files (mode 0600, removed at once).'));
				o.validate = absolutePath;
				o.placeholder = '/var/run/mnigs/softether';
			} ]
		];
		tunnels.forEach(function(t) {
			var method = t[0];
			var present = uci.sections('mnigs', method).length > 0;
			var wanted = used(method) || (method === 'iptunnel' && (used('gre') || used('ipip')));
			if (!present && !wanted)
				return;
			s = m.section(form.NamedSection, named(method), method, t[1],
				_('Settings of this tunnel method (shown because a role uses it or the section exists).'));
			s.addremove = true;
			t[2](s);
		});

		return m.render();
	}
});
