# Installs the dashboard's npm packages, exactly as pinned by the lock file, into a build-tree
# folder: `cmake -DNPM=npm -DSRC=<source>/web -DDIR=<build>/web -P npm_ci.cmake`. Copies
# package.json and package-lock.json from SRC to DIR, runs `npm ci` there (no install scripts)
# and touches DIR/npm-ci.stamp. Fails with a clear message, naming a missing network as such.
foreach(var NPM SRC DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "npm_ci.cmake: -D${var}=... is required")
  endif()
endforeach()
file(MAKE_DIRECTORY ${DIR})
file(COPY_FILE ${SRC}/package.json ${DIR}/package.json ONLY_IF_DIFFERENT)
file(COPY_FILE ${SRC}/package-lock.json ${DIR}/package-lock.json ONLY_IF_DIFFERENT)
execute_process(
  COMMAND ${NPM} ci --ignore-scripts --no-audit --no-fund --prefer-offline
  WORKING_DIRECTORY ${DIR}
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  set(hint "")
  if(out MATCHES "ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|network")
    set(hint "the npm registry could not be reached (no network?): the packages pinned by "
             "${SRC}/package-lock.json are downloaded once, then taken from the npm cache. ")
  endif()
  string(JOIN "" hint ${hint})
  message(FATAL_ERROR "npm ci in ${DIR} failed (exit ${rc}): ${hint}npm said:\n${out}")
endif()
file(TOUCH ${DIR}/npm-ci.stamp)
