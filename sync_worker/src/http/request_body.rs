// A webhook request's body and query as handle_webhook sees them: JSON, form-encoded or
// multipart/form-data, parsed in the executor (the HTTP server only forwards bytes).
use crate::python::WebhookRequest;
use crate::webhook_call::{WebhookCall, WebhookTrigger};

/// A header's value by case-insensitive name.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The request as handle_webhook sees it, or (status, why) when it must be refused.
/// (The signature was checked by the HTTP server, which holds the signing secret.)
pub(crate) async fn parse(
    call: &WebhookCall,
    trigger: &WebhookTrigger,
) -> Result<WebhookRequest, (u16, String)> {
    let base_url = &trigger.base_url;
    let ctype = header(&call.headers, "content-type").unwrap_or("");
    let essence = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut req = WebhookRequest {
        method: call.method.clone(),
        path: call.path.clone(),
        url: format!(
            "{base_url}{}{}",
            call.path,
            if call.query.is_empty() {
                String::new()
            } else {
                format!("?{}", call.query)
            }
        ),
        query: call.query.clone(),
        args: pairs(call.query.as_bytes()),
        headers: call.headers.clone(),
        remote_addr: call.remote_addr.clone(),
        body: call.body.clone(),
        content_type: trigger.content_type.clone(),
        ..Default::default()
    };
    let is_json = essence == "application/json" || essence.ends_with("+json");
    if is_json || (essence.is_empty() && trigger.content_type == "json") {
        if !call.body.iter().all(u8::is_ascii_whitespace) {
            req.json = Some(
                serde_json::from_slice(&call.body)
                    .map_err(|e| (400, format!("the request body is not valid JSON: {e}")))?,
            );
        }
    } else if essence == "application/x-www-form-urlencoded" {
        if std::str::from_utf8(&call.body).is_err() {
            return Err((400, "the form body is not UTF-8 text".into()));
        }
        req.form = pairs(&call.body);
    } else if essence == "multipart/form-data" {
        let boundary = multer::parse_boundary(ctype).map_err(|e| {
            (
                400,
                format!("malformed multipart/form-data Content-Type: {e}"),
            )
        })?;
        let (form, files) = multipart(call.body.clone(), boundary)
            .await
            .map_err(|e| (400, format!("malformed multipart/form-data body: {e}")))?;
        req.form = form;
        req.files = files;
    }
    Ok(req)
}

fn pairs(text: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(text)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

type Files = Vec<(String, String, String, Vec<u8>)>;

async fn multipart(
    body: Vec<u8>,
    boundary: String,
) -> Result<(Vec<(String, String)>, Files), multer::Error> {
    let stream = futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(body))
    });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut form = Vec::new();
    let mut files = Vec::new();
    while let Some(field) = mp.next_field().await? {
        let name = field.name().unwrap_or_default().to_string();
        match field.file_name().map(str::to_string) {
            Some(filename) => {
                let ctype = field
                    .content_type()
                    .map_or("application/octet-stream".to_string(), |m| m.to_string());
                let data = field.bytes().await?;
                files.push((name, filename, ctype, data.to_vec()));
            }
            None => {
                let text = field.text().await?;
                form.push((name, text));
            }
        }
    }
    Ok((form, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_fields_and_files() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XX\r\n\
Content-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX--\r\n";
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (form, files) = rt.block_on(multipart(body.to_vec(), "XX".into())).unwrap();
        assert_eq!(form, vec![("a".to_string(), "1".to_string())]);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].1, "x.txt");
        assert_eq!(files[0].3, b"hello");
        assert!(rt
            .block_on(multipart(b"--XX\r\ngarbage".to_vec(), "XX".into()))
            .is_err());
    }
}
