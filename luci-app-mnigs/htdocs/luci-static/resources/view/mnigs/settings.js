'use strict';
'require view';
'require form';

// Absolute paths only, as the daemon requires (hooks, database).
function absolutePath(section_id, value) {
	return (value == null || value === '' || value.charAt(0) === '/') ? true : _('Must be an absolute path');
}

// Interface names: at most 15 characters, no spaces or slashes (the kernel's rules).
function interfaceName(section_id, value) {
	return (value == null || value === '' || /^[^\s\/:]{1,15}$/.test(value)) ? true : _('Not a valid interface name');
}

// Settings of mnigs: /etc/config/mnigs, section by section, with the same limits the daemon
// checks (`mnigs check-config` names file and line of anything LuCI lets through).

return view.extend({
	render: function() {
		var m, s, o;

		m = new form.Map('mnigs', _('Mesh Internet Gateway'),
			_('Share this router\'s Internet access with the mesh, or use a gateway someone else shares.'));

		s = m.section(form.NamedSection, 'main', 'mnigs', _('Node'));
		s.addremove = false;
		o = s.option(form.Value, 'name', _('Node name'), _('What other nodes see; empty means the host name.'));
		o.datatype = 'and(maxlength(63),hostname)';
		o.optional = true;
		o = s.option(form.Value, 'rpc_port', _('RPC port'), _('TCP port of the JSON-RPC server and of the built-in page.'));
		o.datatype = 'port';
		o.placeholder = '65533';
		o = s.option(form.DynamicList, 'listen', _('Listen on'), _('Addresses the server listens on; :: is every address.'));
		o.datatype = 'ipaddr';
		o.placeholder = '::';
		o = s.option(form.Value, 'database', _('Database'), _('SQLite file for gateways seen and sessions.'));
		o.validate = absolutePath;
		o.placeholder = '/var/lib/mnigs/mnigs.db';
		o = s.option(form.DynamicList, 'authorized_network', _('Authorized networks'),
			_('Callers from these networks may control the node (scan, connect, disconnect).'));
		o.datatype = 'cidr';
		o = s.option(form.ListValue, 'web', _('Built-in page for others'),
			_('What callers outside the authorized networks get from http://node:65533/.'));
		o.value('readonly', _('Read only'));
		o.value('off', _('Nothing'));
		o.value('full', _('Full control (trusted mesh only)'));
		o.default = 'off';
		o = s.option(form.ListValue, 'log_level', _('Log level'));
		[ 'error', 'warn', 'info', 'debug' ].forEach(function(l) { o.value(l); });
		o.default = 'info';

		s = m.section(form.NamedSection, 'gateway', 'gateway', _('Gateway'),
			_('Offer this router\'s Internet uplink to mesh nodes.'));
		s.addremove = true;
		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o.rmempty = false;
		o = s.option(form.Value, 'wan_interface', _('Uplink interface'), _('Interface towards the Internet.'));
		o.validate = interfaceName;
		o = s.option(form.Value, 'max_subscribers', _('Maximum subscribers'));
		o.datatype = 'range(1,65535)';
		o.placeholder = '10';
		o = s.option(form.Value, 'lease_seconds', _('Lease length'), _('Seconds; subscribers renew a third of the way through.'));
		o.datatype = 'range(5,86400)';
		o.placeholder = '300';
		o = s.option(form.Value, 'ipv4_pool', _('IPv4 pool'), _('Tunnel addresses for subscribers; at least a /30.'));
		o.datatype = 'cidr4';
		o.placeholder = '100.127.0.0/24';
		o = s.option(form.Value, 'ipv6_pool', _('IPv6 pool'), _('Empty for IPv4 only.'));
		o.datatype = 'cidr6';
		o.optional = true;
		o = s.option(form.Value, 'price', _('Price'), _('0 for free.'));
		o.datatype = 'uinteger';
		o = s.option(form.Value, 'bandwidth_down', _('Bandwidth down'), _('Advertised, kbit/s; 0 for unknown.'));
		o.datatype = 'uinteger';
		o = s.option(form.Value, 'bandwidth_up', _('Bandwidth up'), _('Advertised, kbit/s; 0 for unknown.'));
		o.datatype = 'uinteger';
		o = s.option(form.MultiValue, 'method', _('Tunnel methods'));
		o.value('wireguard', 'WireGuard');
		o = s.option(form.ListValue, 'nat', _('NAT backend'));
		o.value('auto', _('automatic'));
		o.value('nft', 'nftables');
		o.value('iptables', 'iptables');
		o.default = 'auto';

		s = m.section(form.NamedSection, 'subscriber', 'subscriber', _('Subscriber'),
			_('Find gateways on the mesh and route Internet traffic through the best one.'));
		s.addremove = true;
		s.tab('general', _('General'));
		s.tab('hooks', _('Hooks'));
		o = s.taboption('general', form.Flag, 'enabled', _('Enabled'));
		o.rmempty = false;
		o = s.taboption('general', form.MultiValue, 'method', _('Tunnel methods'), _('In order of preference.'));
		o.value('wireguard', 'WireGuard');
		o = s.taboption('general', form.Value, 'scan_interval', _('Scan interval'), _('Seconds between scans.'));
		o.datatype = 'range(1,86400)';
		o.placeholder = '300';
		o = s.taboption('general', form.Value, 'negative_cache', _('Skip silent nodes'), _('Seconds a node that keeps not answering is left out of scans (a manual scan asks everyone); 0 asks every node every time.'));
		o.datatype = 'range(0,86400)';
		o.placeholder = '600';
		o = s.taboption('general', form.Value, 'probe_interval', _('Probe interval'), _('Seconds between checks of the current gateway.'));
		o.datatype = 'range(1,3600)';
		o.placeholder = '1';
		o = s.taboption('general', form.Value, 'max_price', _('Highest price'));
		o.datatype = 'uinteger';
		[
			[ 'on_connect', _('On connect'), _('Run when the tunnel is up.') ],
			[ 'on_disconnect', _('On disconnect'), _('Run when the tunnel is down.') ],
			[ 'on_register', _('On register'), _('Run when a gateway granted a lease.') ],
			[ 'on_release', _('On release'), _('Run when the lease was given back.') ],
			[ 'on_failover', _('On failover'), _('Run when the gateway was lost.') ]
		].forEach(function(h) {
			o = s.taboption('hooks', form.Value, h[0], h[1],
				h[2] + ' ' + _('An executable (absolute path), run with MNIGS_* variables in its environment.'));
			o.validate = absolutePath;
			o.optional = true;
		});
		o = s.taboption('hooks', form.Value, 'hook_timeout', _('Hook timeout'), _('Seconds before a hook is killed.'));
		o.datatype = 'range(1,3600)';
		o.placeholder = '10';

		s = m.section(form.GridSection, 'discovery', _('Discovery'),
			_('Ways of finding gateways; each section is tried on every scan.'));
		s.addremove = true;
		s.anonymous = false;
		s.nodescriptions = true;
		o = s.option(form.ListValue, 'method', _('Method'));
		o.value('routes', _('Routing table'));
		o = s.option(form.Value, 'protocol', _('Routing protocol'), _('Only routes of this protocol (babel, bird, ...).'));
		o.optional = true;
		o.datatype = 'and(maxlength(15),string)';
		o = s.option(form.DynamicList, 'port', _('Ports'), _('RPC ports to probe.'));
		o.datatype = 'port';
		o = s.option(form.DynamicList, 'interface', _('Interfaces'));
		o.validate = interfaceName;
		o.optional = true;
		o.modalonly = true;
		o = s.option(form.DynamicList, 'prefix', _('Prefixes'), _('Only candidates inside these prefixes.'));
		o.datatype = 'cidr';
		o.optional = true;
		o.modalonly = true;
		o = s.option(form.Value, 'timeout_ms', _('Probe timeout (ms)'));
		o.datatype = 'range(50,60000)';
		o.optional = true;
		o = s.option(form.Value, 'concurrency', _('Parallel probes'));
		o.datatype = 'range(1,1024)';
		o.optional = true;
		o.modalonly = true;

		s = m.section(form.NamedSection, 'wireguard', 'wireguard', _('WireGuard'),
			_('Settings of the WireGuard tunnel method.'));
		s.addremove = true;
		o = s.option(form.Value, 'interface', _('Gateway interface'));
		o.validate = interfaceName;
		o.placeholder = 'mnigs-wg';
		o = s.option(form.Value, 'listen_port', _('Gateway UDP port'));
		o.datatype = 'port';
		o.placeholder = '51820';
		o = s.option(form.Value, 'client_interface', _('Subscriber interface'));
		o.validate = interfaceName;
		o = s.option(form.Value, 'mtu', _('MTU'));
		o.datatype = 'range(1280,9000)';
		o.placeholder = '1420';

		return m.render();
	}
});
