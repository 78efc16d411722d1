//! `luci-app-mnigs/po/templates/mnigs.pot` is what `openwrt/luci-pot` makes of the app today: every
//! `_()`/`N_()` string of the views, the menu titles and the ACL description, each with the places
//! it is used. After a view changes, run `openwrt/luci-pot` and commit the template.

use std::path::Path;
use std::process::Command;

const TOP: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_translation_template_is_current_and_complete() {
    let out = Command::new(Path::new(TOP).join("openwrt/luci-pot"))
        .arg("--check")
        .output()
        .expect("python3 runs openwrt/luci-pot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pot = std::fs::read_to_string(Path::new(TOP).join("luci-app-mnigs/po/templates/mnigs.pot"))
        .unwrap();
    // Every call site in the views is listed: count them independently of the generator.
    let views = Path::new(TOP).join("luci-app-mnigs/htdocs/luci-static/resources/view/mnigs");
    for view in std::fs::read_dir(&views).unwrap().flatten() {
        let name = view.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(view.path()).unwrap();
        for (i, line) in text.lines().enumerate() {
            let bytes = line.as_bytes();
            let calls = line
                .match_indices("_(")
                .filter(|(at, _)| {
                    let before = if *at == 0 { b' ' } else { bytes[at - 1] };
                    let before = if before == b'N' && *at >= 2 {
                        bytes[at - 2]
                    } else {
                        before
                    };
                    !(before.is_ascii_alphanumeric() || b"_.$".contains(&before))
                })
                .count();
            if calls > 0 {
                let place = format!(
                    "#: htdocs/luci-static/resources/view/mnigs/{name}:{}\n",
                    i + 1
                );
                assert!(
                    pot.matches(&place).count() >= 1,
                    "{name}:{} has a translated string missing from the template",
                    i + 1
                );
            }
        }
    }
    for title in ["Mesh Internet Gateway", "Status", "Settings"] {
        assert!(
            pot.contains(&format!("msgid \"{title}\"\n")),
            "menu title {title}"
        );
    }
}
