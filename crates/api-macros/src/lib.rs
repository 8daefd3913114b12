//! Proc macros fed by the generated lists in `cuda-types`
//! (`with_cuda_functions!` / `with_nvml_functions!`). Each list hands every
//! prototype of its header to one of these, so no other file repeats the
//! signatures:
//!
//! - [`export_functions`]: the cdylib exports. Implemented names forward to a
//!   Rust function through a panic boundary; every other name becomes a stub
//!   that reports NOT_SUPPORTED and logs its name once.
//! - [`driver_table`]: a struct of optional function pointers resolved by
//!   name from a loaded driver (the host's view of libcuda or vgpu-emu).

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use std::collections::BTreeMap;
use syn::parse::{Parse, ParseStream};
use syn::{braced, FnArg, Ident, Pat, Path, Signature, Token};

struct Prototypes(Vec<Signature>);

impl Parse for Prototypes {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let sig: Signature = input.parse()?;
            input.parse::<Token![;]>()?;
            out.push(sig);
        }
        Ok(Prototypes(out))
    }
}

/// What an implemented name forwards to: a function, and constant arguments
/// appended after the C arguments (`name => f[Null::PerThread]`), so the
/// variants of one entry point that differ only in such a constant (the
/// `_ptsz`/`_ptds` per-thread-stream exports) share one implementation.
struct Target {
    path: Path,
    extra: Vec<syn::Expr>,
}

/// `key = path,` pairs followed by the blocks `implemented { name => path, ... }`
/// and, optionally, `without_init { ... }` (same syntax): entry points that
/// work before the library is initialised skip the `require` check.
struct ExportArgs {
    settings: BTreeMap<String, Path>,
    /// `(name, target, needs_init)`.
    implemented: Vec<(Ident, Target, bool)>,
}

fn parse_entries(
    body: ParseStream,
    needs_init: bool,
    out: &mut Vec<(Ident, Target, bool)>,
) -> syn::Result<()> {
    while !body.is_empty() {
        let name: Ident = body.parse()?;
        body.parse::<Token![=>]>()?;
        let path: Path = body.parse()?;
        let mut extra = Vec::new();
        if body.peek(syn::token::Bracket) {
            let args;
            syn::bracketed!(args in body);
            extra = args
                .parse_terminated(syn::Expr::parse, Token![,])?
                .into_iter()
                .collect();
        }
        out.push((name, Target { path, extra }, needs_init));
        if body.peek(Token![,]) {
            body.parse::<Token![,]>()?;
        }
    }
    Ok(())
}

impl Parse for ExportArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut settings = BTreeMap::new();
        let mut implemented = Vec::new();
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            if key == "implemented" || key == "without_init" {
                let body;
                braced!(body in input);
                parse_entries(&body, key == "implemented", &mut implemented)?;
            } else {
                input.parse::<Token![=]>()?;
                let value: Path = input.parse()?;
                settings.insert(key.to_string(), value);
            }
            if input.peek(Token![,]) {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(ExportArgs {
            settings,
            implemented,
        })
    }
}

struct Invocation<A> {
    args: A,
    prototypes: Prototypes,
}

impl<A: Parse> Parse for Invocation<A> {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let body;
        braced!(body in input);
        let args = body.parse()?;
        let prototypes = input.parse()?;
        Ok(Invocation { args, prototypes })
    }
}

fn setting<'a>(args: &'a ExportArgs, key: &str) -> syn::Result<&'a Path> {
    args.settings
        .get(key)
        .ok_or_else(|| syn::Error::new(Span::call_site(), format!("missing `{key} = ...`")))
}

fn arg_names(sig: &Signature) -> Vec<Ident> {
    sig.inputs
        .iter()
        .enumerate()
        .map(|(i, arg)| match arg {
            FnArg::Typed(t) => match &*t.pat {
                Pat::Ident(p) => p.ident.clone(),
                _ => format_ident!("arg{}", i),
            },
            FnArg::Receiver(_) => format_ident!("arg{}", i),
        })
        .collect()
}

/// Exports every prototype of the list as `#[no_mangle] extern "C"`.
///
/// ```ignore
/// cuda_types::with_cuda_functions!(api_macros::export_functions {
///     lookup = exported_symbol,        // generated: fn(&[u8]) -> Option<*const c_void>
///     require = crate::driver::require, // fn() -> Result<(), CUresult>, optional
///     implemented {
///         cuMemAlloc_v2 => crate::memory::alloc,
///         cuLaunchKernel => crate::launch::launch_kernel[Null::Legacy],
///         cuLaunchKernel_ptsz => crate::launch::launch_kernel[Null::PerThread],
///     }
///     without_init {
///         cuInit => crate::init::init,
///         cuGetErrorName => vgpu_ffi::entry::cu_get_error_name,
///     }
/// });
/// ```
///
/// An implemented export runs inside `vgpu_ffi::boundary` (no panic unwinds
/// into C): first `require()` unless the entry is under `without_init`,
/// then every C argument converted by `vgpu_ffi::FromCuda` into the type
/// the implementation's parameter declares (a conversion's error is the
/// call's result and the body never runs), then the body with the
/// converted arguments and the bracketed constants, if any. The body
/// returns `Result<(), S>` for the export's status type `S`; it may be an
/// `unsafe fn`. An export whose C return type is not a status (only
/// `nvmlErrorString`) calls its body with the raw arguments through
/// `vgpu_ffi::boundary_value` and returns what it returns.
///
/// Every other name becomes a stub returning NOT_SUPPORTED that logs its
/// name once. Naming a function the list does not contain, or one twice,
/// is a compile error, so the status list cannot drift from the header.
/// Also generated: `IMPLEMENTED` and `NOT_SUPPORTED`, the two halves of the
/// list by name.
#[proc_macro]
pub fn export_functions(input: TokenStream) -> TokenStream {
    let inv = syn::parse_macro_input!(input as Invocation<ExportArgs>);
    match expand_exports(inv) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// The C return type if it is a status the FFI runtime knows
/// (`CUresult`, `nvmlReturn_t`), for the conversions' error type.
fn status_type(ret: &syn::ReturnType) -> Option<&syn::Type> {
    match ret {
        syn::ReturnType::Type(_, ty) => match &**ty {
            syn::Type::Path(p)
                if p.path
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == "CUresult" || s.ident == "nvmlReturn_t") =>
            {
                Some(ty)
            }
            _ => None,
        },
        syn::ReturnType::Default => None,
    }
}

fn expand_exports(inv: Invocation<ExportArgs>) -> syn::Result<TokenStream2> {
    let lookup = setting(&inv.args, "lookup")?;
    let require = inv.args.settings.get("require");
    for key in inv.args.settings.keys() {
        if !matches!(key.as_str(), "lookup" | "require") {
            return Err(syn::Error::new(
                Span::call_site(),
                format!("unknown setting `{key}`"),
            ));
        }
    }
    let mut implemented: BTreeMap<String, (&Target, bool)> = BTreeMap::new();
    for (name, target, needs_init) in &inv.args.implemented {
        if implemented
            .insert(name.to_string(), (target, *needs_init))
            .is_some()
        {
            return Err(syn::Error::new(name.span(), "listed twice"));
        }
    }
    let known: std::collections::BTreeSet<String> = inv
        .prototypes
        .0
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    for (name, _, _) in &inv.args.implemented {
        if !known.contains(&name.to_string()) {
            return Err(syn::Error::new(
                name.span(),
                "not a function of the pinned header",
            ));
        }
    }

    let mut items = Vec::new();
    let mut arms = Vec::new();
    let mut done_names = Vec::new();
    let mut stub_names = Vec::new();
    for sig in &inv.prototypes.0 {
        let name = &sig.ident;
        let name_str = name.to_string();
        let ret = &sig.output;
        let names = arg_names(sig);
        let types: Vec<_> = sig
            .inputs
            .iter()
            .filter_map(|a| match a {
                FnArg::Typed(t) => Some(&t.ty),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let byte_name = syn::LitByteStr::new(name_str.as_bytes(), name.span());
        arms.push(quote! { #byte_name => Some(#name as *const ::core::ffi::c_void), });
        let Some((target, needs_init)) = implemented.get(&name_str) else {
            stub_names.push(name_str.clone());
            items.push(quote! {
                #[no_mangle]
                #[allow(non_snake_case, clippy::missing_safety_doc)]
                pub unsafe extern "C" fn #name(#(_: #types),*) #ret {
                    static LOGGED: ::core::sync::atomic::AtomicBool =
                        ::core::sync::atomic::AtomicBool::new(false);
                    ::vgpu_ffi::not_supported(#name_str, &LOGGED)
                }
            });
            continue;
        };
        done_names.push(name_str.clone());
        let path = &target.path;
        let extra = &target.extra;
        let body = match status_type(ret) {
            Some(status) => {
                let check = match (needs_init, require) {
                    (true, Some(require)) => quote! { #require()?; },
                    _ => quote! {},
                };
                quote! {
                    ::vgpu_ffi::boundary::<#status>(#name_str, move || {
                        #check
                        // SAFETY: the arguments come from a C caller under
                        // this entry point's contract, which is what the
                        // conversions and the implementation assume.
                        unsafe {
                            #path(
                                #(::vgpu_ffi::from_cuda::<_, _, #status>(#names)?,)*
                                #(#extra),*
                            )
                        }
                    })
                }
            }
            None => quote! {
                ::vgpu_ffi::boundary_value(#name_str, move || {
                    // SAFETY: as above; the raw arguments are passed on.
                    unsafe { #path(#(#names,)* #(#extra),*) }
                })
            },
        };
        items.push(quote! {
            #[no_mangle]
            #[allow(non_snake_case, unused_unsafe, clippy::missing_safety_doc)]
            pub unsafe extern "C" fn #name(#(#names: #types),*) #ret {
                #body
            }
        });
    }
    Ok(quote! {
        #(#items)*

        /// Address of an exported function by its exact symbol name.
        pub fn #lookup(name: &[u8]) -> Option<*const ::core::ffi::c_void> {
            match name {
                #(#arms)*
                _ => None,
            }
        }

        /// Names with a real implementation.
        pub const IMPLEMENTED: &[&str] = &[#(#done_names),*];
        /// Names exported as NOT_SUPPORTED stubs.
        pub const NOT_SUPPORTED: &[&str] = &[#(#stub_names),*];
    })
}

/// `name = StructName` (and optionally `filter { fnA, fnB }`; without it,
/// every function) → `pub struct StructName` with one
/// `Option<unsafe extern "C" fn(..) -> R>` field per function and
/// `unsafe fn load(resolve: impl FnMut(&CStr) -> *mut c_void) -> Self`.
/// Missing symbols stay `None`; nothing panics on them.
#[proc_macro]
pub fn driver_table(input: TokenStream) -> TokenStream {
    let inv = syn::parse_macro_input!(input as Invocation<ExportArgs>);
    match expand_table(inv) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand_table(inv: Invocation<ExportArgs>) -> syn::Result<TokenStream2> {
    let name = setting(&inv.args, "name")?;
    let mut fields = Vec::new();
    let mut loads = Vec::new();
    for sig in &inv.prototypes.0 {
        let ident = &sig.ident;
        let ret = &sig.output;
        let types: Vec<_> = sig
            .inputs
            .iter()
            .filter_map(|a| match a {
                FnArg::Typed(t) => Some(&t.ty),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let cname = syn::LitCStr::new(
            &std::ffi::CString::new(ident.to_string()).unwrap(),
            ident.span(),
        );
        fields.push(quote! {
            pub #ident: Option<unsafe extern "C" fn(#(#types),*) #ret>,
        });
        loads.push(quote! {
            #ident: {
                let p = resolve(#cname);
                if p.is_null() {
                    None
                } else {
                    // SAFETY: the symbol was exported under this name, whose
                    // ABI the pinned header fixes.
                    Some(unsafe { ::core::mem::transmute::<*mut ::core::ffi::c_void, _>(p) })
                }
            },
        });
    }
    Ok(quote! {
        #[allow(non_snake_case)]
        pub struct #name {
            #(#fields)*
        }

        impl #name {
            /// Resolves every function by name; absent ones are `None`.
            ///
            /// # Safety
            /// `resolve` must return null or the address of a function with
            /// the prototype the header gives that name.
            pub unsafe fn load(mut resolve: impl FnMut(&::core::ffi::CStr) -> *mut ::core::ffi::c_void) -> Self {
                #name {
                    #(#loads)*
                }
            }
        }
    })
}
