//! Passwords people send to IRC services in messages (`/msg NickServ IDENTIFY <password>`,
//! `REGISTER`, `GHOST`, Undernet's `X LOGIN`, QuakeNet's `Q AUTH`), which must not reach a
//! write-once archive where they could not be deleted before retention ends.
//!
//! Invariants: a message to a services nick alone whose command takes a credential keeps its
//! command words and loses everything after them in what is archived and reported, so no
//! argument of such a command (a password, or a nick that might be one) is kept; that a
//! credential was sent stays visible; policy still judges what was sent (a services nick may
//! be an ordinary user's on another network); a message with more than one recipient, or to
//! anyone else, is untouched.

/// Nicks of the services that take credentials in messages, lower case.
const SERVICES: [&str; 11] = [
    "nickserv", "chanserv", "operserv", "hostserv", "memoserv", "botserv", "authserv", "userserv",
    "saslserv", "q", "x",
];

/// Commands whose arguments carry a credential, lower case.
const COMMANDS: [&str; 17] = [
    "identify",
    "id",
    "login",
    "auth",
    "register",
    "ghost",
    "recover",
    "release",
    "regain",
    "group",
    "drop",
    "setpass",
    "resetpass",
    "confirm",
    "verify",
    "password",
    "pass",
];

/// What stands in the record for the withheld arguments.
pub const WITHHELD: &str = "[credentials withheld]";

/// The text to archive for `text` sent to `targets`: its command and [`WITHHELD`] when it
/// is a credential command to a service alone, else `None` (keep the text).
pub fn withheld(targets: &[String], text: &str) -> Option<String> {
    let [target] = targets else {
        return None;
    };
    let nick = target.split('@').next().unwrap_or(target);
    if !SERVICES.contains(&nick.to_ascii_lowercase().as_str()) {
        return None;
    }
    let mut words = text.split_whitespace();
    let first = words.next()?;
    let verb = first.to_ascii_lowercase();
    if COMMANDS.contains(&verb.as_str()) {
        return Some(format!("{first} {WITHHELD}"));
    }
    // `SET PASSWORD <new>`, `SET PASS <new>`.
    let second = words.next()?;
    let setting = second.to_ascii_lowercase();
    (verb == "set" && matches!(setting.as_str(), "password" | "pass"))
        .then(|| format!("{first} {second} {WITHHELD}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(target: &str, text: &str) -> Option<String> {
        withheld(&[target.to_owned()], text)
    }

    #[test]
    fn credentials_sent_to_services_are_withheld_and_the_command_kept() {
        assert_eq!(
            to("NickServ", "IDENTIFY hunter2").as_deref(),
            Some("IDENTIFY [credentials withheld]")
        );
        assert_eq!(
            to("nickserv@services.libera.chat", "identify jane hunter2").as_deref(),
            Some("identify [credentials withheld]")
        );
        assert_eq!(
            to("NickServ", "REGISTER hunter2 jane@acme.example").as_deref(),
            Some("REGISTER [credentials withheld]")
        );
        assert_eq!(
            to("NickServ", "GHOST jane hunter2").as_deref(),
            Some("GHOST [credentials withheld]")
        );
        assert_eq!(
            to("NickServ", "SET PASSWORD hunter3").as_deref(),
            Some("SET PASSWORD [credentials withheld]")
        );
        assert_eq!(
            to("X", "LOGIN jane hunter2").as_deref(),
            Some("LOGIN [credentials withheld]")
        );
        assert_eq!(
            to("Q@CServe.quakenet.org", "AUTH jane hunter2").as_deref(),
            Some("AUTH [credentials withheld]")
        );
    }

    #[test]
    fn everything_else_is_kept() {
        assert_eq!(to("NickServ", "INFO jane"), None);
        assert_eq!(to("NickServ", "SET EMAIL jane@acme.example"), None);
        assert_eq!(to("bob", "identify hunter2"), None);
        assert_eq!(to("#desk", "register for the event"), None);
        assert_eq!(to("NickServ", ""), None);
        assert_eq!(
            withheld(
                &["NickServ".to_owned(), "#desk".to_owned()],
                "IDENTIFY project falcon"
            ),
            None,
            "a message that also goes to people is kept whole"
        );
    }
}
