//! The catalogue of IM and collaboration services recognised by TLS server name, so that
//! policy can allow or block them even when their content stays unreadable. Users extend it
//! with services of their own.
//!
//! Invariants: a name matches a domain when it equals it or is a subdomain of it (at a label
//! boundary: `notslack.com` is not `slack.com`); when several domains match, the longest wins,
//! and between equally long ones the one added last, so users can reassign a built-in domain.

/// Built-in services and their domains.
const BUILTIN: &[(&str, &[&str])] = &[
    (
        "slack",
        &[
            "slack.com",
            "slack-edge.com",
            "slack-msgs.com",
            "slack-files.com",
            "slack-imgs.com",
        ],
    ),
    (
        "teams",
        &[
            "teams.microsoft.com",
            "teams.live.com",
            "teams.cloud.microsoft",
            "lync.com",
            "skypeforbusiness.com",
        ],
    ),
    ("skype", &["skype.com", "skype.net", "skypeassets.com"]),
    ("whatsapp", &["whatsapp.com", "whatsapp.net", "wa.me"]),
    (
        "signal",
        &["signal.org", "whispersystems.org", "signal.art"],
    ),
    (
        "telegram",
        &[
            "telegram.org",
            "telegram.me",
            "t.me",
            "telesco.pe",
            "tdesktop.com",
        ],
    ),
    (
        "discord",
        &[
            "discord.com",
            "discord.gg",
            "discordapp.com",
            "discordapp.net",
            "discord.media",
        ],
    ),
    ("zoom", &["zoom.us", "zoom.com", "zoomgov.com"]),
    (
        "google-chat",
        &["chat.google.com", "hangouts.google.com", "meet.google.com"],
    ),
    ("webex", &["webex.com", "wbx2.com", "ciscospark.com"]),
    (
        "messenger",
        &["messenger.com", "m.me", "edge-chat.facebook.com"],
    ),
    ("instagram", &["instagram.com", "cdninstagram.com"]),
    ("wechat", &["wechat.com", "weixin.qq.com"]),
    ("line", &["line.me", "line-apps.com", "line-scdn.net"]),
    ("viber", &["viber.com"]),
    ("threema", &["threema.ch"]),
    ("matrix", &["matrix.org", "element.io"]),
    ("mattermost", &["mattermost.com", "cloud.mattermost.com"]),
    ("symphony", &["symphony.com"]),
    ("bloomberg", &["bloomberg.net", "bloomberg.com"]),
    ("icq", &["icq.com", "icq.net"]),
    ("snapchat", &["snapchat.com", "sc-cdn.net"]),
];

/// Service names recognised by server name.
#[derive(Debug, Clone)]
pub struct ServiceCatalogue {
    /// (domain, service), lower-case.
    entries: Vec<(String, String)>,
}

impl Default for ServiceCatalogue {
    fn default() -> Self {
        let entries = BUILTIN
            .iter()
            .flat_map(|(service, domains)| {
                domains
                    .iter()
                    .map(|d| ((*d).to_owned(), (*service).to_owned()))
            })
            .collect();
        Self { entries }
    }
}

impl ServiceCatalogue {
    /// Adds (or extends) a service with `domains`.
    pub fn extend(&mut self, service: &str, domains: impl IntoIterator<Item = impl AsRef<str>>) {
        for domain in domains {
            let domain = domain
                .as_ref()
                .trim_start_matches("*.")
                .trim_end_matches('.')
                .to_ascii_lowercase();
            self.entries.push((domain, service.to_owned()));
        }
    }

    /// The service a server name belongs to.
    pub fn classify(&self, server_name: &str) -> Option<&str> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        self.entries
            .iter()
            .filter(|(domain, _)| {
                name == *domain
                    || name
                        .strip_suffix(domain.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            })
            .max_by_key(|(domain, _)| domain.len())
            .map(|(_, service)| service.as_str())
    }

    /// Every service name, sorted and without repeats.
    pub fn services(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.entries.iter().map(|(_, s)| s.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_domain_and_subdomain() {
        let catalogue = ServiceCatalogue::default();
        assert_eq!(catalogue.classify("edgeapi.slack.com"), Some("slack"));
        assert_eq!(catalogue.classify("WEB.WhatsApp.com."), Some("whatsapp"));
        assert_eq!(catalogue.classify("teams.microsoft.com"), Some("teams"));
        assert_eq!(catalogue.classify("notslack.com"), None);
        assert_eq!(catalogue.classify("example.com"), None);
        for name in [
            "chat.signal.org",
            "web.telegram.org",
            "gateway.discord.gg",
            "us05web.zoom.us",
            "chat.google.com",
        ] {
            assert!(catalogue.classify(name).is_some(), "{name}");
        }
    }

    #[test]
    fn users_extend_it_and_the_longest_domain_wins() {
        let mut catalogue = ServiceCatalogue::default();
        catalogue.extend("acme-chat", ["*.chat.acme.example", "acme-im.example"]);
        catalogue.extend("google-meet", ["meet.google.com"]);
        assert_eq!(
            catalogue.classify("eu.chat.acme.example"),
            Some("acme-chat")
        );
        assert_eq!(catalogue.classify("acme-im.example"), Some("acme-chat"));
        assert_eq!(
            catalogue.classify("meet.google.com"),
            Some("google-meet"),
            "a user's entry overrides a built-in one"
        );
        assert_eq!(catalogue.classify("chat.google.com"), Some("google-chat"));
        assert!(catalogue.services().contains(&"acme-chat"));
    }
}
