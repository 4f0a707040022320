//! `--modes` on the tools' command lines: the modes as [`Mode`]'s
//! `ValueEnum` names them, separated by commas, or `all`.

use clap::ValueEnum;
use clap::builder::PossibleValue;
use harness::Mode;

/// One value of `--modes`: a mode, or `all` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeArg {
    All,
    One(Mode),
}

/// `all`, then every mode.
const CHOICES: [ModeArg; Mode::ALL.len() + 1] = {
    let mut choices = [ModeArg::All; Mode::ALL.len() + 1];
    let mut i = 0;
    while i < Mode::ALL.len() {
        choices[i + 1] = ModeArg::One(Mode::ALL[i]);
        i += 1;
    }
    choices
};

impl ValueEnum for ModeArg {
    fn value_variants<'a>() -> &'a [Self] {
        &CHOICES
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        match self {
            ModeArg::All => Some(PossibleValue::new("all").help("Every mode, in this order")),
            ModeArg::One(mode) => mode.to_possible_value(),
        }
    }
}

impl ModeArg {
    /// The modes `args` name, each once, in the order given; `all` is
    /// every mode, in [`Mode::ALL`]'s order.
    pub fn modes(args: &[ModeArg]) -> Vec<Mode> {
        if args.contains(&ModeArg::All) {
            return Mode::ALL.to_vec();
        }
        let mut modes = Vec::new();
        for arg in args {
            if let ModeArg::One(mode) = *arg
                && !modes.contains(&mode)
            {
                modes.push(mode);
            }
        }
        modes
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Args {
        #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
        modes: Vec<ModeArg>,
    }

    fn modes(line: &[&str]) -> Result<Vec<Mode>, clap::Error> {
        let args = Args::try_parse_from(std::iter::once("tool").chain(line.iter().copied()))?;
        Ok(ModeArg::modes(&args.modes))
    }

    #[test]
    fn modes_are_named_as_the_reports_name_them() {
        for mode in Mode::ALL {
            assert_eq!(modes(&["--modes", mode.name()]).unwrap(), [mode]);
        }
    }

    #[test]
    fn all_is_the_default_and_a_list_keeps_its_order() {
        assert_eq!(modes(&[]).unwrap(), Mode::ALL);
        assert_eq!(modes(&["--modes", "all"]).unwrap(), Mode::ALL);
        assert_eq!(
            modes(&["--modes", "self-read,outbox,self-read"]).unwrap(),
            [Mode::SelfRead, Mode::Outbox]
        );
    }

    #[test]
    fn an_unknown_mode_is_refused_with_the_choices() {
        let error = modes(&["--modes", "outbox,inbox"]).unwrap_err().to_string();
        assert!(error.contains("inbox"), "{error}");
        assert!(error.contains("outbox-cdc"), "{error}");
    }
}
