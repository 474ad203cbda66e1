[
  inputs: ["{mix,.formatter}.exs", "{config,lib,test,bench,demo,tools}/**/*.{ex,exs}"]
]
