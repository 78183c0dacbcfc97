//! Manifest endpoints (GET/HEAD/PUT/DELETE by tag and digest), the tags list, the catalog and
//! the referrers API.

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, LINK, LOCATION};
use hyper::{Request, Response, StatusCode};
use oci_spec::distribution::{ErrorCode, RepositoryListBuilder, TagListBuilder};
use oci_spec::image::{DescriptorBuilder, ImageIndexBuilder, MediaType};

use super::error::ApiError;
use super::route::param;
use super::{bump, empty, full, json, set, Api, Body};
use crate::registry::manifest::{self, OCI_INDEX};
use crate::registry::names::{Digest, Reference, RepoName};
use crate::registry::storage::{Manifest, Referrer};

fn unknown_manifest(reference: &impl std::fmt::Display) -> ApiError {
    ApiError::not_found(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} is not in this repository"),
    )
}

/// The digest `reference` names in `name` (a tag is looked up).
async fn resolve(api: &Api, name: &RepoName, reference: &Reference) -> Result<Digest, ApiError> {
    match reference {
        Reference::Digest(digest) => Ok(digest.clone()),
        Reference::Tag(tag) => {
            let (n, t) = (name.clone(), tag.clone());
            api.store_call(move |store| store.tag(&n, &t))
                .await?
                .ok_or_else(|| unknown_manifest(tag))
        }
    }
}

pub(super) async fn get(
    api: &Api,
    name: RepoName,
    reference: Reference,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let digest = resolve(api, &name, &reference).await?;
    let (n, d) = (name.clone(), digest.clone());
    let manifest = api
        .store_call(move |store| store.manifest(&n, &d))
        .await?
        .ok_or_else(|| unknown_manifest(&reference))?;
    let len = manifest.bytes.len();
    let mut response = if head {
        empty(StatusCode::OK)
    } else {
        bump(&api.counters.pulls, 1);
        full(StatusCode::OK, manifest.bytes)
    };
    set(&mut response, CONTENT_TYPE, &manifest.media_type);
    set(&mut response, CONTENT_LENGTH, &len.to_string());
    set(&mut response, "docker-content-digest", &digest.to_string());
    Ok(response)
}

pub(super) async fn put(
    api: &Api,
    name: RepoName,
    reference: Reference,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let limit = api.store.limits().max_manifest_bytes;
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let bytes = Limited::new(
        request.into_body(),
        usize::try_from(limit).unwrap_or(usize::MAX),
    )
    .collect()
    .await
    .map_err(|error| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ManifestInvalid,
            format!("reading the manifest (at most {limit} bytes): {error}"),
        )
    })?
    .to_bytes()
    .to_vec();
    let parsed = manifest::parse(content_type.as_deref(), &bytes)
        .map_err(|error| ApiError::bad_request(ErrorCode::ManifestInvalid, error))?;
    let (digest, tag) = match &reference {
        Reference::Digest(given) => {
            let actual = Digest::of(given.algorithm(), &bytes);
            if &actual != given {
                return Err(ApiError::bad_request(
                    ErrorCode::DigestInvalid,
                    format!("the manifest's digest is {actual}, not {given}"),
                ));
            }
            (actual, None)
        }
        Reference::Tag(tag) => (Digest::sha256_of(&bytes), Some(tag.clone())),
    };
    let size = bytes.len() as u64;
    let stored = Manifest {
        digest: digest.clone(),
        media_type: parsed.media_type.clone(),
        bytes,
    };
    let subject = parsed.subject.clone();
    let referrer = parsed.referrer(&digest, size);
    let n = name.clone();
    let checked = parsed.clone();
    api.store_call(move |store| {
        // Shared with other pushes, exclusive with GC's sweep: what is checked here stays
        // until the manifest that keeps it is stored.
        let _gc = store
            .gc_lock()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for blob in &checked.blobs {
            if store.blob_size(&n, blob, true)?.is_none() {
                return Ok(Err(format!("blob {blob} is not in {n}")));
            }
        }
        for child in &checked.children {
            if store.manifest(&n, child)?.is_none() {
                return Ok(Err(format!("manifest {child} is not in {n}")));
            }
        }
        let subject = subject.as_ref().map(|subject| (subject, &referrer));
        store.put_manifest(&n, &stored, tag.as_ref(), subject)?;
        Ok(Ok(()))
    })
    .await?
    .map_err(|missing| ApiError::bad_request(ErrorCode::ManifestBlobUnknown, missing))?;
    bump(&api.counters.pushes, 1);
    let mut response = empty(StatusCode::CREATED);
    set(
        &mut response,
        LOCATION,
        &format!("/v2/{name}/manifests/{digest}"),
    );
    set(&mut response, "docker-content-digest", &digest.to_string());
    set(&mut response, CONTENT_LENGTH, "0");
    if let Some(subject) = &parsed.subject {
        set(&mut response, "oci-subject", &subject.to_string());
    }
    Ok(response)
}

pub(super) async fn delete(
    api: &Api,
    name: RepoName,
    reference: Reference,
) -> Result<Response<Body>, ApiError> {
    let n = name.clone();
    let removed = match &reference {
        Reference::Digest(digest) => {
            let d = digest.clone();
            api.store_call(move |store| store.delete_manifest(&n, &d))
                .await?
        }
        Reference::Tag(tag) => {
            let t = tag.clone();
            api.store_call(move |store| store.delete_tag(&n, &t))
                .await?
        }
    };
    if removed {
        Ok(empty(StatusCode::ACCEPTED))
    } else {
        Err(unknown_manifest(&reference))
    }
}

/// `n` and `last` applied to a sorted list; whether more follow.
fn page(all: Vec<String>, params: &[(String, String)]) -> Result<(Vec<String>, bool), ApiError> {
    let mut items: Vec<String> = match param(params, "last") {
        Some(last) => all
            .into_iter()
            .filter(|item| item.as_str() > last)
            .collect(),
        None => all,
    };
    let Some(n) = param(params, "n") else {
        return Ok((items, false));
    };
    let n: usize = n.parse().map_err(|_| {
        ApiError::bad_request(ErrorCode::Unsupported, format!("n={n:?} is not a count"))
    })?;
    let more = items.len() > n;
    items.truncate(n);
    Ok((items, more))
}

fn with_next(
    mut response: Response<Body>,
    path: &str,
    items: &[String],
    more: bool,
    n: Option<&str>,
) -> Response<Body> {
    if let (true, Some(last), Some(n)) = (more, items.last(), n) {
        set(
            &mut response,
            LINK,
            &format!("<{path}?n={n}&last={last}>; rel=\"next\""),
        );
    }
    response
}

pub(super) async fn tags(
    api: &Api,
    name: RepoName,
    params: &[(String, String)],
) -> Result<Response<Body>, ApiError> {
    let n = name.clone();
    let tags = api
        .store_call(move |store| store.tags(&n))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(ErrorCode::NameUnknown, format!("no repository {name}"))
        })?;
    let (tags, more) = page(tags.iter().map(ToString::to_string).collect(), params)?;
    let list = TagListBuilder::default()
        .name(name.to_string())
        .tags(tags.clone())
        .build()
        .map_err(ApiError::internal)?;
    let response = json(StatusCode::OK, &list);
    Ok(with_next(
        response,
        &format!("/v2/{name}/tags/list"),
        &tags,
        more,
        param(params, "n"),
    ))
}

pub(super) async fn catalog(
    api: &Api,
    params: &[(String, String)],
) -> Result<Response<Body>, ApiError> {
    let repos = api.store_call(|store| store.repositories()).await?;
    let (repos, more) = page(repos.iter().map(ToString::to_string).collect(), params)?;
    let list = RepositoryListBuilder::default()
        .repositories(repos.clone())
        .build()
        .map_err(ApiError::internal)?;
    let response = json(StatusCode::OK, &list);
    Ok(with_next(
        response,
        "/v2/_catalog",
        &repos,
        more,
        param(params, "n"),
    ))
}

pub(super) async fn referrers(
    api: &Api,
    name: RepoName,
    subject: Digest,
    params: &[(String, String)],
) -> Result<Response<Body>, ApiError> {
    let mut list = api
        .store_call(move |store| store.referrers(&name, &subject))
        .await?;
    let filter = param(params, "artifactType");
    if let Some(filter) = filter {
        list.retain(|referrer| referrer.artifact_type.as_deref() == Some(filter));
    }
    let descriptors = list
        .iter()
        .map(descriptor)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(descriptors)
        .build()
        .map_err(ApiError::internal)?;
    let mut response = json(StatusCode::OK, &index);
    set(&mut response, CONTENT_TYPE, OCI_INDEX);
    if filter.is_some() {
        set(&mut response, "oci-filters-applied", "artifactType");
    }
    Ok(response)
}

fn descriptor(referrer: &Referrer) -> Result<oci_spec::image::Descriptor, anyhow::Error> {
    let digest: oci_spec::image::Digest = referrer.digest.parse()?;
    let mut builder = DescriptorBuilder::default()
        .media_type(MediaType::from(referrer.media_type.as_str()))
        .digest(digest)
        .size(referrer.size);
    if let Some(artifact_type) = &referrer.artifact_type {
        builder = builder.artifact_type(MediaType::from(artifact_type.as_str()));
    }
    if let Some(annotations) = &referrer.annotations {
        builder = builder.annotations(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    Ok(builder.build()?)
}
