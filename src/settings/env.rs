//! Errors of a value read from a `FERROSERVE_*` variable name that variable:
//! [`NamesItsVariable`], the value parser every argument of `serve` that reads a
//! variable is wrapped in ([`name_variables_in_errors`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::{
    BoolValueParser, EnumValueParser, PathBufValueParser, PossibleValue, StringValueParser,
    TypedValueParser,
};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;

use super::LogFormat;

/// An argument's own value parser (`P`) whose errors, for a value that came from
/// the argument's environment variable, name that variable: clap's own message
/// names only the flag, which a user who set `FERROSERVE_AUTH_TOKENS=` may never
/// have typed. clap tells the parser where a value came from (`parse_ref_`).
#[derive(Clone)]
struct NamesItsVariable<P>(P);

impl<P: TypedValueParser> TypedValueParser for NamesItsVariable<P> {
    type Value = P::Value;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<P::Value, clap::Error> {
        self.0.parse_ref(cmd, arg, value)
    }

    fn parse_ref_(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
        source: ValueSource,
    ) -> Result<P::Value, clap::Error> {
        let (Some(arg), Some(variable), ValueSource::EnvVariable) =
            (arg, arg.and_then(clap::Arg::get_env), source)
        else {
            return self.0.parse_ref_(cmd, arg, value, source);
        };
        let variable = variable.to_string_lossy();
        // An empty variable is most often one a template or an `env:` entry left
        // with no value. It is refused, as clap refuses an empty path, whatever the
        // argument's type: an empty URL or address is no value either.
        if value.is_empty() {
            // A list's variable (`a,,b`) may hold an empty item without being empty.
            let what = if std::env::var_os(variable.as_ref()).is_some_and(|v| v.is_empty()) {
                "is set but empty"
            } else {
                "holds an empty value in its list"
            };
            return Err(clap::Error::raw(
                ErrorKind::InvalidValue,
                format!(
                    "the environment variable {variable} {what}: unset it or give it a \
                     value for {arg}\n"
                ),
            )
            .with_cmd(cmd));
        }
        self.0
            .parse_ref_(cmd, Some(arg), value, source)
            .map_err(|e| {
                let why = match (
                    std::error::Error::source(&e),
                    e.get(ContextKind::ValidValue),
                ) {
                    (Some(cause), _) => format!(": {cause}"),
                    (None, Some(ContextValue::Strings(valid))) => {
                        format!(" [possible values: {}]", valid.join(", "))
                    }
                    _ => String::new(),
                };
                clap::Error::raw(
                    e.kind(),
                    format!(
                        "invalid value {:?} in the environment variable {variable} (for \
                         {arg}){why}\n",
                        value.to_string_lossy()
                    ),
                )
                .with_cmd(cmd)
            })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        self.0.possible_values()
    }
}

/// Gives every argument of a command that reads a variable ([`ServeArgs`]' and
/// the `--config` beside them) its own value parser wrapped in
/// [`NamesItsVariable`], chosen by the type it parses: the parser clap's derive
/// picks for that type. Applied by `#[command(mut_args = …)]` on [`ServeArgs`],
/// so that no field can be left out; an argument of a type not listed here keeps
/// its parser (the test `every_variables_errors_name_it` then fails).
pub(super) fn name_variables_in_errors(arg: clap::Arg) -> clap::Arg {
    use std::any::TypeId;
    use std::str::FromStr;
    if arg.get_env().is_none() {
        return arg;
    }
    let parses = arg.get_value_parser().type_id();
    let is = |t: TypeId| parses == t;
    // What clap's `value_parser!` gives for a type without a parser of its own.
    type FromStrFn<T> = fn(&str) -> Result<T, <T as FromStr>::Err>;
    fn from_str<T>() -> NamesItsVariable<FromStrFn<T>>
    where
        T: FromStr + Clone + Send + Sync + 'static,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        NamesItsVariable(T::from_str)
    }
    if is(TypeId::of::<PathBuf>()) {
        arg.value_parser(NamesItsVariable(PathBufValueParser::new()))
    } else if is(TypeId::of::<String>()) {
        arg.value_parser(NamesItsVariable(StringValueParser::new()))
    } else if is(TypeId::of::<bool>()) {
        arg.value_parser(NamesItsVariable(BoolValueParser::new()))
    } else if is(TypeId::of::<u64>()) {
        arg.value_parser(NamesItsVariable(clap::value_parser!(u64)))
    } else if is(TypeId::of::<u32>()) {
        arg.value_parser(NamesItsVariable(clap::value_parser!(u32)))
    } else if is(TypeId::of::<usize>()) {
        arg.value_parser(from_str::<usize>())
    } else if is(TypeId::of::<f64>()) {
        arg.value_parser(from_str::<f64>())
    } else if is(TypeId::of::<SocketAddr>()) {
        arg.value_parser(from_str::<SocketAddr>())
    } else if is(TypeId::of::<std::net::IpAddr>()) {
        arg.value_parser(from_str::<std::net::IpAddr>())
    } else if is(TypeId::of::<LogFormat>()) {
        arg.value_parser(NamesItsVariable(EnumValueParser::<LogFormat>::new()))
    } else {
        arg
    }
}
