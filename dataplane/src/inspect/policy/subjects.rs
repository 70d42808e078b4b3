//! Whom a policy applies to: people, directory groups, and handle globs. Comparisons are
//! case-insensitive; a policy with no subjects applies to everyone.

use std::collections::HashSet;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use imgate_crds::policy::Subjects;

use crate::inspect::event::Party;

/// A compiled `subjects` section.
#[derive(Debug, Clone)]
pub struct SubjectMatcher {
    everyone: bool,
    people: HashSet<String>,
    groups: HashSet<String>,
    handles: GlobSet,
}

impl SubjectMatcher {
    /// Compiles subjects; returns the index and error of a handle glob that fails.
    pub fn new(subjects: &Subjects) -> Result<Self, (usize, String)> {
        let mut handles = GlobSetBuilder::new();
        for (index, handle) in subjects.handles.iter().enumerate() {
            let glob = GlobBuilder::new(handle)
                .case_insensitive(true)
                .literal_separator(false)
                .build()
                .map_err(|e| (index, e.kind().to_string()))?;
            handles.add(glob);
        }
        Ok(Self {
            everyone: subjects.is_empty(),
            people: subjects.people.iter().map(|p| p.to_lowercase()).collect(),
            groups: subjects.groups.iter().map(|g| g.to_lowercase()).collect(),
            handles: handles.build().map_err(|e| (0, e.to_string()))?,
        })
    }

    /// True when the policy applies to `sender`.
    pub fn matches(&self, sender: &Party) -> bool {
        if self.everyone {
            return true;
        }
        let person = sender
            .person
            .as_deref()
            .is_some_and(|p| self.people.contains(&*lower(p)));
        person
            || sender
                .groups
                .iter()
                .any(|g| self.groups.contains(&*lower(g)))
            || (!self.handles.is_empty() && self.handles.is_match(&sender.handle))
    }
}

fn lower(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_uppercase) {
        text.to_lowercase().into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(handle: &str, person: Option<&str>, groups: &[&str]) -> Party {
        Party {
            handle: handle.into(),
            person: person.map(Into::into),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn matches_people_groups_and_handles() {
        let subjects = Subjects {
            people: vec!["Jane.Doe@acme.example".into()],
            groups: vec!["traders".into()],
            handles: vec!["*@desk.example".into()],
        };
        let matcher = SubjectMatcher::new(&subjects).expect("compiles");
        assert!(matcher.matches(&party("x", Some("jane.doe@ACME.example"), &[])));
        assert!(matcher.matches(&party("x", None, &["Traders"])));
        assert!(matcher.matches(&party("bob@DESK.example", None, &[])));
        assert!(!matcher.matches(&party(
            "bob@chat.example",
            Some("bob@acme.example"),
            &["ops"]
        )));
        assert!(
            SubjectMatcher::new(&Subjects::default())
                .expect("compiles")
                .matches(&party("anyone", None, &[]))
        );
    }
}
