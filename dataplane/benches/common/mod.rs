//! The chat-like corpus both benchmarks use: message lengths log-normal with a mean of about
//! 40 characters, everyday chat words, occasional numbers, links, keyword hits and card numbers.

#![allow(dead_code)]

use imgate_crds::policy::{Direction, Protocol};
use imgate_dataplane::inspect::event::{Content, ConversationKind, Event, Party};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal};

/// Messages in the corpus.
pub const MESSAGES: usize = 10_000;

const CHAT_WORDS: &[&str] = &[
    "ok", "thanks", "see", "you", "at", "the", "meeting", "call", "me", "when", "free", "can",
    "we", "move", "to", "tomorrow", "sounds", "good", "lol", "yes", "no", "maybe", "price", "is",
    "looking", "better", "today", "did", "send", "deck", "client", "wants", "update", "on",
    "numbers", "lunch", "coffee", "quick", "question", "about", "report", "will", "check", "and",
    "get", "back", "sure", "np", "great", "let", "know", "how", "it", "goes", "market", "opened",
    "strong", "rates", "fund", "trade",
];

/// Pronounceable pseudo-words, so keywords rarely collide with chat words.
fn keyword(rng: &mut StdRng, words: usize) -> String {
    const ONSETS: &[&str] = &[
        "b", "br", "c", "d", "f", "g", "k", "l", "m", "n", "p", "qu", "r", "s", "st", "t", "tr",
        "v", "z",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ou"];
    (0..words)
        .map(|_| {
            (0..rng.random_range(2..4))
                .map(|_| {
                    format!(
                        "{}{}",
                        ONSETS[rng.random_range(0..ONSETS.len())],
                        VOWELS[rng.random_range(0..VOWELS.len())]
                    )
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn keywords(count: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| keyword(&mut rng, 1 + i % 3 / 2))
        .collect()
}

pub fn corpus(keywords: &[String]) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(7);
    let lengths = LogNormal::new(40f64.ln() - 0.32, 0.8).expect("valid distribution");
    (0..MESSAGES)
        .map(|i| {
            let target = (lengths.sample(&mut rng) as usize).clamp(1, 2000);
            let mut text = String::new();
            while text.len() < target {
                if !text.is_empty() {
                    text.push(' ');
                }
                let roll = rng.random_range(0..1000);
                match roll {
                    0..=9 => text.push_str(&keywords[rng.random_range(0..keywords.len())]),
                    10..=11 => text.push_str("4111 1111 1111 1111"),
                    12..=16 => text.push_str("https://docs.example.com/q3"),
                    17..=40 => text.push_str(&rng.random_range(1..100_000).to_string()),
                    _ => text.push_str(CHAT_WORDS[rng.random_range(0..CHAT_WORDS.len())]),
                }
            }
            Event {
                tenant: "bench".into(),
                protocol: Protocol::Xmpp,
                service: None,
                direction: Direction::Outbound,
                sender: Party {
                    handle: format!("user{}@chat.example", i % 500),
                    person: None,
                    groups: Vec::new(),
                },
                recipients: vec!["peer@chat.example".into()],
                room: None,
                conversation: ConversationKind::Direct,
                content: Content::Message { text },
                urls: Vec::new(),
                at_ms: 1_700_000_000_000 + i as u64 * 10,
            }
        })
        .collect()
}
