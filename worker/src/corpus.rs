//! The horoscopes a worker draws from: (sign, text) rows in corpus order.
//!
//! The built-in corpus (`horoscopes.csv`, written for this project) ships
//! inside the binary; `--corpus PATH` loads a file in the original's format
//! instead: `;`-delimited, a header naming at least `sign` and `text`, one row
//! per horoscope. A malformed file is refused with a message naming its line.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// Why a corpus file cannot be used: where, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}", location(.path, .line).map_or_else(|| .message.clone(), |at| format!("{at}: {}", .message)))]
pub struct CorpusError {
    pub path: Option<PathBuf>,
    /// The 1-based line at fault, when one is.
    pub line: Option<u64>,
    pub message: String,
}

fn location(path: &Option<PathBuf>, line: &Option<u64>) -> Option<String> {
    match (path, line) {
        (Some(path), Some(line)) => Some(format!("{}:{line}", path.display())),
        (Some(path), None) => Some(path.display().to_string()),
        (None, Some(line)) => Some(format!("line {line}")),
        (None, None) => None,
    }
}

/// The twelve signs, in the order the choice rule indexes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sign {
    Aries,
    Taurus,
    Gemini,
    Cancer,
    Leo,
    Virgo,
    Libra,
    Scorpio,
    Sagittarius,
    Capricorn,
    Aquarius,
    Pisces,
}

impl Sign {
    /// Every sign, ARIES first.
    pub const ALL: [Sign; 12] = [
        Sign::Aries,
        Sign::Taurus,
        Sign::Gemini,
        Sign::Cancer,
        Sign::Leo,
        Sign::Virgo,
        Sign::Libra,
        Sign::Scorpio,
        Sign::Sagittarius,
        Sign::Capricorn,
        Sign::Aquarius,
        Sign::Pisces,
    ];

    /// The sign's name as the corpus writes it: `ARIES` … `PISCES`.
    pub fn name(self) -> &'static str {
        match self {
            Sign::Aries => "ARIES",
            Sign::Taurus => "TAURUS",
            Sign::Gemini => "GEMINI",
            Sign::Cancer => "CANCER",
            Sign::Leo => "LEO",
            Sign::Virgo => "VIRGO",
            Sign::Libra => "LIBRA",
            Sign::Scorpio => "SCORPIO",
            Sign::Sagittarius => "SAGITTARIUS",
            Sign::Capricorn => "CAPRICORN",
            Sign::Aquarius => "AQUARIUS",
            Sign::Pisces => "PISCES",
        }
    }

    /// Parses a sign name, ignoring case and surrounding white space.
    pub fn parse(name: &str) -> Option<Sign> {
        let name = name.trim();
        Sign::ALL
            .into_iter()
            .find(|sign| sign.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Sign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Horoscopes grouped by sign, each group in corpus order. Every sign has at
/// least one text, and no text is empty.
#[derive(Debug)]
pub struct Corpus {
    texts: [Vec<Arc<str>>; 12],
}

const BUILT_IN: &str = include_str!("../horoscopes.csv");

impl Corpus {
    /// The corpus that ships inside the binary.
    pub fn built_in() -> Corpus {
        Corpus::parse(BUILT_IN.as_bytes(), None).expect("the built-in corpus is valid")
    }

    /// Loads a corpus file in the original's format.
    pub fn load(path: &Path) -> Result<Corpus, CorpusError> {
        let bytes = std::fs::read(path).map_err(|error| CorpusError {
            path: Some(path.to_owned()),
            line: None,
            message: format!("cannot read the file: {error}"),
        })?;
        Corpus::parse(&bytes, Some(path))
    }

    /// Parses `;`-delimited CSV with a header naming `sign` and `text`.
    pub fn parse(bytes: &[u8], path: Option<&Path>) -> Result<Corpus, CorpusError> {
        let fail = |line: Option<u64>, message: String| CorpusError {
            path: path.map(Path::to_owned),
            line,
            message,
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b';')
            .has_headers(true)
            .from_reader(bytes);
        let header = reader
            .headers()
            .map_err(|error| fail(Some(1), error.to_string()))?
            .clone();
        if header.iter().all(|field| field.trim().is_empty()) {
            return Err(fail(
                Some(1),
                "the file is empty; expected a header naming `sign` and `text`".into(),
            ));
        }
        let column = |name: &str| {
            header
                .iter()
                .position(|field| field.trim().eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    fail(
                        Some(1),
                        format!(
                            "the header has no `{name}` column (it has: {})",
                            header.iter().collect::<Vec<_>>().join(", ")
                        ),
                    )
                })
        };
        let (sign_column, text_column) = (column("sign")?, column("text")?);

        let mut texts: [Vec<Arc<str>>; 12] = Default::default();
        for record in reader.records() {
            let record = record.map_err(|error| {
                let line = error.position().map(csv::Position::line);
                fail(line, error.to_string())
            })?;
            let line = record.position().map(csv::Position::line);
            let field = |index: usize| record.get(index).unwrap_or_default();
            let sign = Sign::parse(field(sign_column)).ok_or_else(|| {
                fail(
                    line,
                    format!(
                        "unknown sign {:?}; expected one of {}",
                        field(sign_column),
                        Sign::ALL.map(Sign::name).join(", ")
                    ),
                )
            })?;
            let text = field(text_column).trim();
            if text.is_empty() {
                return Err(fail(line, format!("the {sign} text is empty")));
            }
            texts[sign as usize].push(text.into());
        }
        if let Some(sign) = Sign::ALL
            .into_iter()
            .find(|s| texts[*s as usize].is_empty())
        {
            return Err(fail(
                None,
                format!("no texts for {sign}; every sign needs at least one"),
            ));
        }
        Ok(Corpus { texts })
    }

    /// The sign's texts, in corpus order (never empty).
    pub fn texts(&self, sign: Sign) -> &[Arc<str>] {
        &self.texts[sign as usize]
    }
}

/// A small corpus for tests: "The SIGN sky is wide." for every sign, and a
/// second, shorter CANCER text ("hello" chooses it: n mod 2 = 1).
#[cfg(test)]
pub(crate) fn sky_corpus() -> Corpus {
    let mut csv = String::from("sign;text\n");
    for sign in Sign::ALL {
        csv.push_str(&format!("{sign};The {sign} sky is wide.\n"));
    }
    csv.push_str("CANCER;Short one.\n");
    Corpus::parse(csv.as_bytes(), None).expect("a valid corpus")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete_csv(extra: &str) -> String {
        let mut csv = String::from("sign;text\n");
        for sign in Sign::ALL {
            csv.push_str(&format!(
                "{};The stars favour {}.\n",
                sign,
                sign.name().to_lowercase()
            ));
        }
        csv + extra
    }

    fn error_of(csv: &str) -> String {
        Corpus::parse(csv.as_bytes(), Some(Path::new("my.csv")))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn built_in_corpus_has_thirty_realistic_texts_per_sign() {
        let corpus = Corpus::built_in();
        for sign in Sign::ALL {
            let texts = corpus.texts(sign);
            assert!(texts.len() >= 30, "{sign} has {} texts", texts.len());
            for text in texts {
                let words = text.split(' ').count();
                assert!(
                    (25..=60).contains(&words),
                    "{sign}: {words} words in {text:?}"
                );
                assert!(!text.contains("  "), "{sign}: double space in {text:?}");
            }
            let mut unique = texts.to_vec();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), texts.len(), "{sign} repeats a text");
        }
    }

    #[test]
    fn loads_the_originals_format_with_extra_columns_in_any_order() {
        let csv = "date;text;sign\n2024-01-01;\"Quoted; with a semicolon.\";aries\n";
        let csv = csv.to_string()
            + &complete_csv("")
                .replacen("sign;text\n", "", 1)
                .lines()
                .map(|l| {
                    let (sign, text) = l.split_once(';').unwrap();
                    format!("x;{text};{sign}\n")
                })
                .collect::<String>();
        let corpus = Corpus::parse(csv.as_bytes(), None).unwrap();
        assert_eq!(&*corpus.texts(Sign::Aries)[0], "Quoted; with a semicolon.");
        assert_eq!(&*corpus.texts(Sign::Aries)[1], "The stars favour aries.");
        assert_eq!(corpus.texts(Sign::Pisces).len(), 1);
    }

    #[test]
    fn refuses_an_empty_file() {
        assert_eq!(
            error_of(""),
            "my.csv:1: the file is empty; expected a header naming `sign` and `text`"
        );
    }

    #[test]
    fn refuses_a_missing_column() {
        assert_eq!(
            error_of("sign;horoscope\nARIES;hi\n"),
            "my.csv:1: the header has no `text` column (it has: sign, horoscope)"
        );
    }

    #[test]
    fn refuses_an_unknown_sign_naming_its_line() {
        let message = error_of(&complete_csv("OPHIUCHUS;The thirteenth sign.\n"));
        assert!(
            message.starts_with("my.csv:14: unknown sign \"OPHIUCHUS\""),
            "{message}"
        );
    }

    #[test]
    fn refuses_a_sign_with_no_texts() {
        let csv = complete_csv("").replace("LEO;The stars favour leo.\n", "");
        assert_eq!(
            error_of(&csv),
            "my.csv: no texts for LEO; every sign needs at least one"
        );
    }

    #[test]
    fn refuses_an_empty_text_naming_its_line() {
        assert_eq!(
            error_of(&complete_csv("VIRGO; \n")),
            "my.csv:14: the VIRGO text is empty"
        );
    }

    #[test]
    fn refuses_a_row_with_a_missing_field_naming_its_line() {
        let message = error_of(&complete_csv("VIRGO\n"));
        assert!(message.starts_with("my.csv:14: "), "{message}");
    }

    #[test]
    fn names_an_unreadable_file() {
        let message = Corpus::load(Path::new("/nonexistent/corpus.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("/nonexistent/corpus.csv: cannot read the file"),
            "{message}"
        );
    }
}
