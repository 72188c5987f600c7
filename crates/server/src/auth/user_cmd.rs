//! `ferrod user add|remove|list`: edits the credentials file.

use std::path::PathBuf;

use super::roles::Role;
use super::users::{self, User, Users, MAX_ITERATIONS, MIN_ITERATIONS};
use crate::config::{Config, UserCommand};

/// Runs the command; the `Ok` text is printed for the operator.
pub fn run(cmd: UserCommand, config: &Config) -> Result<String, String> {
    let file = |f: Option<PathBuf>| {
        f.or_else(|| config.credentials_file.clone())
            .ok_or_else(|| {
                "no credentials file: pass --file or configure credentials_file \
             (FERROD_CREDENTIALS_FILE)"
                    .to_string()
            })
    };
    let load = |path: &PathBuf| -> Result<Users, String> {
        if path.exists() {
            Users::load(path).map_err(|e| e.to_string())
        } else {
            Ok(Users::default())
        }
    };
    match cmd {
        UserCommand::Add {
            name,
            password,
            roles,
            file: f,
            realm,
            iterations,
        } => {
            let path = file(f)?;
            users::check_name(&name)?;
            let roles = users::parse_roles(&roles.join(","))?;
            let iterations = iterations.unwrap_or(users::DEFAULT_ITERATIONS);
            if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
                return Err(format!(
                    "--iterations {iterations} is outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"
                ));
            }
            let password = match password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if password.is_empty() {
                return Err("the password is empty".into());
            }
            let realm = realm.unwrap_or_else(|| config.auth_realm.clone());
            let mut all = load(&path)?;
            let replaced = all.users.contains_key(&name);
            let user = User::with_password(&name, roles.clone(), &password, &realm, iterations);
            all.users.insert(name.clone(), user);
            all.save(&path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let mut msg = format!(
                "{} user '{name}' in {} (roles: {})",
                if replaced { "updated" } else { "added" },
                path.display(),
                role_list(&roles)
            );
            if roles.is_empty() {
                msg.push_str(
                    "\nnote: with no roles the user can authenticate but may not use any cache",
                );
            }
            Ok(msg)
        }
        UserCommand::Remove { name, file: f } => {
            let path = file(f)?;
            let mut all = load(&path)?;
            if all.users.remove(&name).is_none() {
                return Err(format!("no user '{name}' in {}", path.display()));
            }
            all.save(&path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(format!("removed user '{name}' from {}", path.display()))
        }
        UserCommand::List { file: f } => {
            let path = file(f)?;
            let all = load(&path)?;
            Ok(all
                .users
                .values()
                .map(|u| format!("{} roles={}", u.name, role_list(&u.roles)))
                .collect::<Vec<_>>()
                .join("\n"))
        }
    }
}

fn role_list(roles: &[Role]) -> String {
    roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(",")
}
